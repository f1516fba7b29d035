// The JSONL training format: what it accepts (RLE as string or runs, polygons, videos) and the
// message for each kind of malformed line.
#include <fstream>

#include "core/error.h"
#include "io/mask_io.h"
#include "test_util.h"
#include "train/dataset.h"

namespace sa2va {
namespace {

std::string write_jsonl(const std::string& tag, const std::string& text) {
  const std::string path = test::temp_dir(tag) + "/data.jsonl";
  std::ofstream(path) << text;
  return path;
}

std::string error_of(const std::string& text) {
  try {
    train::read_training_data(write_jsonl("train-data-bad", text));
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TrainingData, ReadsImagesVideosAndTheirMasks) {
  const std::string path = write_jsonl("train-data",
      R"({"image": "a.png", "conversations": [{"from": "human", "value": "Please segment the cat."},)"
      R"( {"from": "gpt", "value": "Sure, [SEG]."}, {"from": "human", "value": "And the dog?"},)"
      R"( {"from": "gpt", "value": "It is [SEG]."}], "masks": [{"size": [2, 3], "counts": [1, 2, 3]}, [[0, 0, 2, 0, 2, 2]]]})"
      "\n\n"
      R"({"frames": ["v/0.png", "/abs/1.png"], "conversations": [{"from": "human", "value": "<image>Where?"},)"
      R"( {"from": "gpt", "value": "[SEG]."}], "masks": [[{"size": [2, 3], "counts": "0"}, {"size": [2, 3], "counts": [6]}]]})"
      "\n"
      R"({"image": "b.png", "conversations": [{"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A room."}]})"
      "\n");
  const std::vector<train::TrainingSample> data = train::read_training_data(path);
  ASSERT_EQ(data.size(), 3u);
  const std::string folder = path.substr(0, path.rfind('/'));
  EXPECT_EQ(data[0].images, std::vector<std::string>{folder + "/a.png"});
  EXPECT_FALSE(data[0].video);
  ASSERT_EQ(data[0].turns.size(), 2u);
  EXPECT_EQ(data[0].turns[0].human, "<image>\nPlease segment the cat.");  // placed in front when missing
  EXPECT_EQ(data[0].turns[1].human, "And the dog?");
  EXPECT_EQ(data[0].seg_count, 2);
  EXPECT_EQ(data[0].where, path + ":1");
  EXPECT_EQ(train::decode_training_mask(data[0].masks[0][0], 2, 3, "m"), (std::vector<uint8_t>{0, 1, 0, 1, 0, 0}));  // runs go down the columns
  EXPECT_EQ(train::decode_training_mask(data[0].masks[1][0], 2, 3, "m"),
            rle_decode(rle_from_polygon({0, 0, 2, 0, 2, 2}, 2, 3)));
  EXPECT_TRUE(data[1].video);
  EXPECT_EQ(data[1].where, path + ":3");  // the blank line counts
  EXPECT_EQ(data[1].images[1], "/abs/1.png");
  EXPECT_EQ(data[1].turns[0].human, "<image>Where?");  // kept where it is written
  ASSERT_EQ(data[1].masks[0].size(), 2u);
  EXPECT_EQ(train::decode_training_mask(data[1].masks[0][1], 2, 3, "m"), std::vector<uint8_t>(6, 0));
  EXPECT_EQ(data[2].seg_count, 0);
}

TEST(TrainingData, MalformedLinesAreNamedWithTheirProblem) {
  const std::string turns = R"("conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "[SEG]."}])";
  EXPECT_NE(error_of("{not json\n").find("data.jsonl:1: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("[1, 2]\n").find("must be a JSON object"), std::string::npos);
  EXPECT_NE(error_of(R"({"conversations": []})" "\n").find("either \"image\" or \"frames\""), std::string::npos);
  EXPECT_NE(error_of(R"({"image": "a.png", "frames": ["b.png"], )" + turns + "}\n").find("either"), std::string::npos);
  EXPECT_NE(error_of(R"({"image": 3, )" + turns + "}\n").find("file paths"), std::string::npos);
  EXPECT_NE(error_of(R"({"image": "a.png", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]})" "\n")
                .find("turn 0 must be {\"from\": \"human\""),
            std::string::npos);
  EXPECT_NE(error_of(R"({"image": "a.png", "conversations": [{"from": "human", "value": "x"}]})" "\n").find("alternate"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"image": "a.png", )" + turns + "}\n").find("1 [SEG] in the answers but 0 masks"), std::string::npos);
  EXPECT_NE(error_of(R"({"frames": ["a.png", "b.png"], )" + turns + R"(, "masks": [[{"size": [1, 1], "counts": [1]}]]})" "\n")
                .find("one mask per frame (2)"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"image": "a.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<image> x"}]})" "\n")
                .find("only in the first question"),
            std::string::npos);
  EXPECT_NE(error_of("\n\n").find("no training samples"), std::string::npos);
  EXPECT_THROW(train::read_training_data("/nonexistent/data.jsonl"), Error);
  // Masks are checked against the image when decoded.
  const auto mask_error = [](const std::string& text) {
    try {
      train::decode_training_mask(nlohmann::json::parse(text), 2, 3, "here");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(mask_error(R"({"size": [3, 2], "counts": [6]})").find("here: mask size [3,2] differs from the image's 2x3"),
            std::string::npos);
  EXPECT_NE(mask_error(R"({"size": [2, 3], "counts": [1, 2]})").find("here:"), std::string::npos);  // runs do not cover it
  EXPECT_NE(mask_error(R"({"size": [2, 3], "counts": [1.5, 4.5]})").find("integers"), std::string::npos);
  EXPECT_NE(mask_error(R"({"size": [2, 3], "counts": "!!"})").find("here:"), std::string::npos);  // not RLE text
  EXPECT_NE(mask_error(R"([[0, 0, 1]])").find("polygon is a list"), std::string::npos);
  EXPECT_NE(mask_error(R"([[0, 0, 3e35, 0, 2, 2]])").find("here: polygon: coordinate"),
            std::string::npos);
  EXPECT_NE(mask_error(R"("x")").find("COCO RLE object or a list of polygons"), std::string::npos);
}

}  // namespace
}  // namespace sa2va
