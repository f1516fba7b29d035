#include "train/dataset.h"

#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "io/json_number.h"
#include "io/mask_io.h"

namespace sa2va::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

int count_seg(const std::string& text) {
  int n = 0;
  for (size_t at = text.find("[SEG]"); at != std::string::npos; at = text.find("[SEG]", at + 5)) ++n;
  return n;
}

std::string resolve(const fs::path& folder, const json& v, const std::string& where, const char* field) {
  check(v.is_string() && !v.get<std::string>().empty(), where + ": \"" + field + "\" must hold file paths (strings)");
  const fs::path p(v.get<std::string>());
  return (p.is_absolute() ? p : folder / p).lexically_normal().string();
}

TrainingSample parse_sample(const json& j, const fs::path& folder, const std::string& where) {
  check(j.is_object(), where + ": a sample must be a JSON object");
  TrainingSample s;
  s.where = where;
  check(j.contains("image") != j.contains("frames"), where + ": give either \"image\" or \"frames\"");
  if (j.contains("image")) {
    s.images.push_back(resolve(folder, j["image"], where, "image"));
  } else {
    const json& frames = j["frames"];
    check(frames.is_array() && !frames.empty(), where + ": \"frames\" must be a non-empty list of paths");
    for (const json& f : frames) s.images.push_back(resolve(folder, f, where, "frames"));
    s.video = true;
  }
  check(j.contains("conversations") && j["conversations"].is_array() && !j["conversations"].empty(),
        where + ": \"conversations\" must be a non-empty list of turns");
  const json& turns = j["conversations"];
  check(turns.size() % 2 == 0, where + ": turns must alternate human, gpt (an even number of them)");
  for (size_t t = 0; t < turns.size(); t += 2) {
    const auto text = [&](size_t i, const char* role) {
      const json& turn = turns[i];
      check(turn.is_object() && turn.contains("from") && turn["from"] == role && turn.contains("value") &&
                turn["value"].is_string(),
            where + ": turn " + std::to_string(i) + " must be {\"from\": \"" + role + "\", \"value\": text}");
      return turn["value"].get<std::string>();
    };
    TrainingTurn turn{text(t, "human"), text(t + 1, "gpt")};
    check(!turn.gpt.empty(), where + ": answer " + std::to_string(t / 2) + " is empty");
    check(turn.human.find("[SEG]") == std::string::npos, where + ": [SEG] belongs in answers, not in questions");
    check((t == 0 || turn.human.find("<image>") == std::string::npos) && turn.gpt.find("<image>") == std::string::npos,
          where + ": \"<image>\" may appear only in the first question");
    s.seg_count += count_seg(turn.gpt);
    s.turns.push_back(std::move(turn));
  }
  const size_t first = s.turns[0].human.find("<image>");
  if (first == std::string::npos) s.turns[0].human = "<image>\n" + s.turns[0].human;
  else check(s.turns[0].human.find("<image>", first + 7) == std::string::npos, where + ": \"<image>\" appears twice");

  const json masks = j.value("masks", json::array());
  check(masks.is_array(), where + ": \"masks\" must be a list (one entry per [SEG])");
  check(static_cast<int>(masks.size()) == s.seg_count, where + ": " + std::to_string(s.seg_count) +
                                                           " [SEG] in the answers but " +
                                                           std::to_string(masks.size()) + " masks");
  for (size_t k = 0; k < masks.size(); ++k) {
    if (s.video) {
      check(masks[k].is_array() && masks[k].size() == s.images.size(),
            where + ": mask " + std::to_string(k) + " must be a list of one mask per frame (" +
                std::to_string(s.images.size()) + ")");
      std::vector<std::string>& frames = s.masks.emplace_back();
      for (size_t f = 0; f < masks[k].size(); ++f) {
        check_training_mask(masks[k][f], where + ": mask " + std::to_string(k) + " frame " + std::to_string(f));
        frames.push_back(masks[k][f].dump());
      }
    } else {
      check_training_mask(masks[k], where + ": mask " + std::to_string(k));
      s.masks.push_back({masks[k].dump()});
    }
  }
  if (j.contains("regions")) {
    const json& regions = j["regions"];
    check(regions.is_array(), where + ": \"regions\" must be a list of masks (the visual prompts)");
    check(regions.empty() || !s.video, where + ": \"regions\" (visual prompts) need an \"image\", not \"frames\"");
    for (size_t k = 0; k < regions.size(); ++k) {
      check_training_mask(regions[k], where + ": region " + std::to_string(k + 1));
      s.regions.push_back(regions[k].dump());
    }
  }
  return s;
}

TrainingSample parse_line(const std::string& line, const fs::path& folder, const std::string& where) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    throw Error(where + ": not valid JSON (" + e.what() + ")");
  }
  try {
    return parse_sample(j, folder, where);
  } catch (const json::exception& e) {
    throw Error(where + ": " + e.what());
  }
}

uint64_t fnv1a(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (const char c : bytes) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

}  // namespace

TrainingData::TrainingData(std::string path, const std::function<void(const TrainingSample&)>& visit)
    : path_(std::move(path)) {
  std::error_code ec;
  check(!fs::is_directory(path_, ec), path_ + ": is a folder, not a JSONL file of training samples");
  std::ifstream in(path_, std::ios::binary);
  check(in.good(), path_ + ": cannot open the training data");
  const fs::path folder = fs::path(path_).parent_path();
  std::string line;
  uint64_t offset = 0;
  for (int32_t number = 1; std::getline(in, line); ++number) {
    const uint64_t start = offset;
    offset += line.size() + 1;
    check(number < std::numeric_limits<int32_t>::max(), path_ + ": too many lines");
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    check(line.size() <= std::numeric_limits<uint32_t>::max(), path_ + ":" + std::to_string(number) + ": line over 4 GiB");
    const TrainingSample s = parse_line(line, folder, path_ + ":" + std::to_string(number));
    if (visit) visit(s);
    lines_.push_back({start, fnv1a(line), static_cast<uint32_t>(line.size()), number});
  }
  check(!in.bad(), path_ + ": read error");
  check(!lines_.empty(), path_ + ": no training samples");
}

TrainingSample TrainingData::sample(size_t index) const {
  check(index < lines_.size(), path_ + ": no sample " + std::to_string(index));
  const Line& at = lines_[index];
  const std::string where = path_ + ":" + std::to_string(at.number);
  std::ifstream in(path_, std::ios::binary);
  std::string line(at.length, '\0');
  in.seekg(static_cast<std::streamoff>(at.offset));
  in.read(line.data(), static_cast<std::streamsize>(line.size()));
  check(in.good() && fnv1a(line) == at.hash,
        where + ": the training data changed since the run began (keep the file unchanged while training)");
  return parse_line(line, fs::path(path_).parent_path(), where);
}

std::vector<TrainingSample> read_training_data(const std::string& path) {
  std::vector<TrainingSample> samples;
  TrainingData(path, [&](const TrainingSample& s) { samples.push_back(s); });
  return samples;
}

std::vector<uint8_t> decode_training_mask(const std::string& mask, int height, int width, const std::string& where) {
  const json parsed = json::parse(mask, nullptr, /*allow_exceptions=*/false);
  check(!parsed.is_discarded(), where + ": a mask is not valid JSON");
  return decode_training_mask(parsed, height, width, where);
}

namespace {

// A MASK entry read: an RLE's size and runs, or polygons as coordinates (boxes already traced as
// their corners), every check but the picture's size made.
struct MaskForm {
  bool rle = false;
  CocoRle runs;
  std::vector<std::vector<double>> polygons;
};

MaskForm read_mask(const json& mask, const std::string& where) {
  MaskForm form;
  if (mask.is_object()) {
    check(mask.contains("size") && mask["size"].is_array() && mask["size"].size() == 2 && mask.contains("counts"),
          where + ": a COCO RLE mask needs \"size\": [h, w] and \"counts\"");
    const auto h = json_integer(mask["size"][0], 0, 1 << 20), w = json_integer(mask["size"][1], 0, 1 << 20);
    check(h && w, where + ": mask size " + mask["size"].dump() + " is not [height, width] in pixels");
    form.rle = true;
    form.runs = {static_cast<int>(*h), static_cast<int>(*w), {}};
    const json& counts = mask["counts"];
    uint64_t covered = 0;
    if (counts.is_string()) {
      try {
        form.runs.counts = rle_counts_from_string(counts.get<std::string>());
      } catch (const Error& e) {
        throw Error(where + ": " + e.what());
      }
    } else {
      check(counts.is_array(), where + ": RLE \"counts\" must be a string or a list of runs");
      for (const json& c : counts) {
        const auto run = json_integer(c, 0, *h * *w);
        check(run.has_value(), where + ": RLE runs must be integers within the image");
        form.runs.counts.push_back(static_cast<uint32_t>(*run));
      }
    }
    for (const uint32_t run : form.runs.counts) covered += run;
    check(covered == static_cast<uint64_t>(*h * *w), where + ": RLE runs cover " + std::to_string(covered) +
                                                         " pixels, not " + std::to_string(*h) + " x " + std::to_string(*w));
    return form;
  }
  check(mask.is_array(), where + ": a mask must be a COCO RLE object or a list of polygons");
  // pycocotools reads no empty list (upstream's training fails on one): an empty region is an RLE of zeros.
  check(!mask.empty(), where + ": an empty polygon list (an empty mask is an RLE whose runs are all background)");
  // As pycocotools' frPyObjects reads a list: its first entry's length decides, 4 numbers making
  // every entry a box [x, y, w, h] (traced as its four corners), more making them polygons.
  const bool boxes = mask[0].is_array() && mask[0].size() == 4;
  check(!mask[0].is_array() || mask[0].size() >= 4,
        where + ": a polygon needs at least 3 points (6 numbers; 4 numbers are a box [x, y, w, h])");
  for (const json& polygon : mask) {
    check(polygon.is_array() && polygon.size() % 2 == 0, where + ": a polygon is a list [x0, y0, x1, y1, ...]");
    check(!boxes || polygon.size() == 4, where + ": a list of boxes holds [x, y, w, h] entries only");
    std::vector<double> xy;
    for (const json& v : polygon) {
      const auto f = json_float(v);
      check(f.has_value(), where + ": polygon coordinates must be numbers");
      xy.push_back(v.get<double>());
    }
    if (boxes) xy = {xy[0], xy[1], xy[0], xy[1] + xy[3], xy[0] + xy[2], xy[1] + xy[3], xy[0] + xy[2], xy[1]};
    form.polygons.push_back(std::move(xy));
  }
  return form;
}

}  // namespace

void check_training_mask(const json& mask, const std::string& where) { read_mask(mask, where); }

std::vector<uint8_t> decode_training_mask(const json& mask, int height, int width, const std::string& where) {
  const MaskForm form = read_mask(mask, where);
  if (form.rle) {
    check(form.runs.height == height && form.runs.width == width,
          where + ": mask size " + mask["size"].dump() + " differs from the image's " + std::to_string(height) + "x" +
              std::to_string(width));
    try {
      return rle_decode(form.runs);
    } catch (const Error& e) {
      throw Error(where + ": " + e.what());
    }
  }
  std::vector<uint8_t> out(static_cast<size_t>(height) * width, 0);
  for (const std::vector<double>& xy : form.polygons) {
    try {  // rle_from_polygon refuses coordinates it cannot trace; name the line
      const std::vector<uint8_t> part = rle_decode(rle_from_polygon(xy, height, width));
      for (size_t i = 0; i < out.size(); ++i) out[i] |= part[i];
    } catch (const Error& e) {
      throw Error(where + ": " + e.what());
    }
  }
  return out;
}

}  // namespace sa2va::train
