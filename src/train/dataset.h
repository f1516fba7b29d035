// The training data format of `sa2va train` (docs/training.md §9): JSON Lines, one sample per line.
//
//   {"image": "images/0001.jpg",
//    "conversations": [{"from": "human", "value": "<image>\nPlease segment the red circle in this image."},
//                      {"from": "gpt", "value": "Sure, [SEG]."}],
//    "masks": [MASK, ...]}                         one per [SEG] of the answers, in order
//   {"frames": ["v/00000.jpg", ...], "conversations": [...],
//    "masks": [[MASK per frame], ...]}             a video: per [SEG], one mask per frame
//   {"image": ..., "regions": [MASK, ...], "conversations": [...]}
//                                                  visual prompts: regions the questions call
//                                                  region1, region2, ... (images only)
//
// MASK: COCO RLE {"size": [h, w], "counts": "compressed string" | [run, ...]} or COCO polygons
// [[x0, y0, x1, y1, ...], ...] (their union), at the image's size. Paths are relative to the JSONL
// file's folder (or absolute). The first human turn holds "<image>" where the picture goes (it is put
// in front, followed by a newline, when missing); turns alternate human, gpt.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sa2va::train {

struct TrainingTurn {
  std::string human, gpt;
};

struct TrainingSample {
  std::string where;                // "FILE:LINE", for messages
  std::vector<std::string> images;  // the image, or the video's frames (resolved paths)
  bool video = false;
  std::vector<TrainingTurn> turns;
  // [SEG] k, frame f: the MASK entry as compact JSON text, decoded by decode_training_mask when its
  // sample is prepared (parsed JSON would hold ~2.3x the file's size for a whole run).
  std::vector<std::vector<std::string>> masks;
  int seg_count = 0;                                // [SEG] in the answers
  // Visual prompts: region k's MASK entry as compact JSON text (decoded as masks are), read as
  // inference reads --mask-prompt regions: "region<k+1>" in the prompt, its cells of the thumbnail.
  std::vector<std::string> regions;
};

// A training data file, checked whole when opened and then read again one sample at a time: only
// each sample's place in the file is kept (24 bytes a sample), so a mix of millions of samples does
// not hold its text in memory. Safe to read from several threads.
class TrainingData {
 public:
  // Reads and checks every line (kinds of the fields, turn order, one mask per [SEG] and frame),
  // handing each sample to `visit` when given; throws Error naming the file and line of the first
  // problem. Blank lines are skipped.
  explicit TrainingData(std::string path, const std::function<void(const TrainingSample&)>& visit = {});

  const std::string& path() const { return path_; }
  size_t size() const { return lines_.size(); }
  // Sample `index` (in file order), read again; throws Error when its line changed since it was checked.
  TrainingSample sample(size_t index) const;

 private:
  struct Line {
    uint64_t offset = 0;
    uint64_t hash = 0;  // of the line's bytes, to notice a file edited during a run
    uint32_t length = 0;
    int32_t number = 0;
  };
  std::string path_;
  std::vector<Line> lines_;
};

// Every sample of a file at once (TrainingData's checks).
std::vector<TrainingSample> read_training_data(const std::string& path);

// Checks a MASK entry as far as it can be without its picture (RLE size and runs that cover it,
// polygons of numbers as pycocotools reads a list); throws Error naming `where`.
void check_training_mask(const nlohmann::json& mask, const std::string& where);
// The 0/1 mask (row-major [height, width]) of a MASK entry; throws Error naming `where` when it is
// malformed or its size is not height x width.
std::vector<uint8_t> decode_training_mask(const nlohmann::json& mask, int height, int width, const std::string& where);
// The same for a MASK entry kept as JSON text (TrainingSample::masks).
std::vector<uint8_t> decode_training_mask(const std::string& mask, int height, int width, const std::string& where);

}  // namespace sa2va::train
