// The JSONL training format: what it accepts (RLE as string or runs, polygons, videos) and the
// message for each kind of malformed line.
#include <filesystem>
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
      R"( {"from": "gpt", "value": "[SEG]."}], "masks": [[{"size": [2, 3], "counts": "6"}, {"size": [2, 3], "counts": [6]}]]})"
      "\n"
      R"({"image": "b.png", "conversations": [{"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A room."}]})"
      "\n"
      R"({"image": "c.png", "regions": [{"size": [2, 3], "counts": [2, 4]}, [[0, 0, 2, 0, 2, 2]]],)"
      R"( "conversations": [{"from": "human", "value": "What is region1 next to region2?"}, {"from": "gpt", "value": "A cup."}]})"
      "\n");
  const std::vector<train::TrainingSample> data = train::read_training_data(path);
  ASSERT_EQ(data.size(), 4u);
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
  EXPECT_EQ(train::decode_training_mask(data[1].masks[0][0], 2, 3, "m"), std::vector<uint8_t>(6, 0));
  EXPECT_EQ(train::decode_training_mask(data[1].masks[0][1], 2, 3, "m"), std::vector<uint8_t>(6, 0));
  EXPECT_EQ(data[2].seg_count, 0);
  EXPECT_TRUE(data[2].regions.empty());
  ASSERT_EQ(data[3].regions.size(), 2u);  // visual prompts, decoded as masks are
  EXPECT_EQ(train::decode_training_mask(data[3].regions[0], 2, 3, "r"), (std::vector<uint8_t>{0, 1, 1, 0, 1, 1}));
  EXPECT_EQ(data[3].turns[0].human, "<image>\nWhat is region1 next to region2?");
  // pycocotools' rule for a list: a first entry of 4 numbers makes every entry a box [x, y, w, h].
  EXPECT_EQ(train::decode_training_mask(nlohmann::json::parse("[[1, 0, 2, 2]]"), 2, 3, "m"),
            rle_decode(rle_from_polygon({1, 0, 1, 2, 3, 2, 3, 0}, 2, 3)));
  EXPECT_EQ(train::decode_training_mask(nlohmann::json::parse("[[1, 0, 2, 2]]"), 2, 3, "m"),
            (std::vector<uint8_t>{0, 1, 1, 0, 1, 1}));  // columns 1 and 2 of both rows
}

TEST(TrainingData, ReadsEachSampleAgainFromItsPlaceInTheFile) {
  const std::string line = R"({"image": "a.png", "conversations": [{"from": "human", "value": "Q)";
  const std::string tail = R"("}, {"from": "gpt", "value": "A [SEG]."}], "masks": [[[0, 0, 2, 0, 2, 2]]]})";
  // CRLF line ends, a blank line, and a last line without a newline.
  const std::string path =
      write_jsonl("train-data-lazy", line + "1" + tail + "\r\n\r\n" + line + "2" + tail + "\n" + line + "3" + tail);
  int visited = 0;
  const train::TrainingData data(path, [&](const train::TrainingSample&) { ++visited; });
  EXPECT_EQ(visited, 3);
  ASSERT_EQ(data.size(), 3u);
  const std::vector<train::TrainingSample> whole = train::read_training_data(path);
  for (size_t i : {2u, 0u, 1u}) {
    const train::TrainingSample s = data.sample(i);
    EXPECT_EQ(s.where, whole[i].where);
    EXPECT_EQ(s.turns[0].human, "<image>\nQ" + std::to_string(i + 1));
    EXPECT_EQ(s.turns[0].human, whole[i].turns[0].human);
    EXPECT_EQ(s.masks, whole[i].masks);
  }
  EXPECT_EQ(data.sample(1).where, path + ":3");  // the blank line counts
  EXPECT_THROW(data.sample(3), Error);
  // A file edited during a run is noticed when a changed line is read again.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(line.size()));
    f << "9";
  }
  try {
    data.sample(0);
    ADD_FAILURE() << "no error for a changed line";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":1: the training data changed"), std::string::npos) << e.what();
  }
  EXPECT_EQ(data.sample(2).turns[0].human, "<image>\nQ3");  // the others still read
  std::filesystem::resize_file(path, 10);
  EXPECT_THROW(data.sample(2), Error);
  // A visitor's error stops the reading, as a malformed line does.
  EXPECT_THROW(train::TrainingData(write_jsonl("train-data-lazy2", line + "1" + tail + "\n"),
                                   [](const train::TrainingSample& s) { throw Error(s.where + ": refused"); }),
               Error);
  try {
    train::TrainingData{test::temp_dir("train-data-folder")};
    ADD_FAILURE() << "no error for a folder";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a folder"), std::string::npos) << e.what();
  }
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
  EXPECT_NE(error_of(R"({"image": "a.png", "regions": {"size": [1, 1]}, "conversations": [{"from": "human", "value": "q"},)"
                     R"( {"from": "gpt", "value": "x"}]})" "\n")
                .find("\"regions\" must be a list of masks"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"frames": ["a.png"], "regions": [[[0, 0, 1, 0, 1, 1]]], "conversations": [{"from": "human",)"
                     R"( "value": "q"}, {"from": "gpt", "value": "x"}]})" "\n")
                .find("need an \"image\", not \"frames\""),
            std::string::npos);
  // A mask's or region's form is checked when the file is read (its size against the picture later).
  const auto with_region = [&](const std::string& region) {
    return error_of(R"({"image": "a.png", "regions": [)" + region +
                    R"(], "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "x"}]})" "\n");
  };
  EXPECT_NE(with_region("5").find("data.jsonl:1: region 1: a mask must be a COCO RLE object or a list of polygons"),
            std::string::npos);
  EXPECT_NE(with_region("[[0, 0, 1, 0, 1, 1]], []").find("region 2: an empty polygon list"), std::string::npos);
  EXPECT_NE(with_region("[[1, 2, 3]]").find("region 1: a polygon needs at least 3 points"), std::string::npos);
  EXPECT_NE(with_region(R"({"counts": "6"})").find("region 1: a COCO RLE mask needs"), std::string::npos);
  EXPECT_NE(with_region(R"({"size": [2, 3], "counts": [1, 2]})").find("region 1: RLE runs cover 3 pixels, not 2 x 3"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"image": "a.png", )" + turns + R"(, "masks": [[[1, 2, 3, 4, 5]]]})" "\n")
                .find("data.jsonl:1: mask 0: a polygon is a list"),
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
  EXPECT_NE(mask_error(R"([[0, 0, 1]])").find("at least 3 points"), std::string::npos);
  EXPECT_NE(mask_error(R"([[0, 0, 1, 1], [0, 0, 2, 0, 2, 2]])").find("boxes holds [x, y, w, h] entries only"),
            std::string::npos);
  EXPECT_NE(mask_error(R"([[0, 0, 3e35, 0, 2, 2]])").find("here: polygon: coordinate"),
            std::string::npos);
  EXPECT_NE(mask_error(R"("x")").find("COCO RLE object or a list of polygons"), std::string::npos);
}

}  // namespace
}  // namespace sa2va
