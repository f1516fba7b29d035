#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "test_util.h"

namespace sa2va {
namespace {
namespace fs = std::filesystem;

std::string write_raw(const std::string& dir, const std::string& name, const std::string& header, size_t data_bytes) {
  const std::string path = dir + "/" + name;
  std::ofstream out(path, std::ios::binary);
  uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header;
  out << std::string(data_bytes, '\0');
  return path;
}

// Expects open() to fail with a message that names the file and contains `needle`.
void expect_open_error(const std::string& path, const std::string& needle) {
  try {
    SafetensorsFile::open(path);
    FAIL() << "no error for " << path;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

TEST(Safetensors, RoundTripAllDtypesAndViews) {
  const std::string dir = test::temp_dir("st");
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = a.to(DType::BF16);
  Tensor c = Tensor::empty({3}, DType::I64);
  for (int i = 0; i < 3; ++i) c.data<int64_t>()[i] = -i * 1000000000000LL;
  Tensor t = a.transpose(0, 1);  // non-contiguous input is written contiguously
  write_safetensors(dir + "/x.safetensors", {{"a", a}, {"b", b}, {"c", c}, {"t", t}}, {{"format", "pt"}});
  auto f = SafetensorsFile::open(dir + "/x.safetensors");
  EXPECT_EQ(f->tensors().size(), 4u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->get("a").to_vector(), a.to_vector());
  EXPECT_EQ(f->get("b").dtype(), DType::BF16);
  EXPECT_EQ(f->get("b").to_vector(), a.to_vector());
  EXPECT_EQ(f->get("c").data<int64_t>()[2], -2000000000000LL);
  EXPECT_EQ(f->get("t").shape(), (Shape{3, 2}));
  EXPECT_EQ(f->get("t").to_vector(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_THROW(f->get("missing"), Error);
}

TEST(Safetensors, TensorsOutliveTheFileHandle) {
  const std::string dir = test::temp_dir("st");
  write_safetensors(dir + "/x.safetensors", {{"a", Tensor::from_vector({7, 8}, {2})}});
  Tensor kept;
  { kept = SafetensorsFile::open(dir + "/x.safetensors")->get("a"); }
  EXPECT_EQ(kept.to_vector(), (std::vector<float>{7, 8}));
}

TEST(Safetensors, RejectsBadFiles) {
  const std::string dir = test::temp_dir("st-bad");
  {
    std::ofstream(dir + "/empty.safetensors");
    expect_open_error(dir + "/empty.safetensors", "truncated");
  }
  expect_open_error(dir + "/missing.safetensors", "cannot open");
  {  // header length larger than the file
    const std::string path = dir + "/lying.safetensors";
    std::ofstream out(path, std::ios::binary);
    uint64_t len = 1000;
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << "{}";
    out.close();
    expect_open_error(path, "header length");
  }
  expect_open_error(write_raw(dir, "json.safetensors", "{\"a\": [", 0), "malformed");
  expect_open_error(write_raw(dir, "number.safetensors", "{\"a\": 1e999999}", 0), "malformed");
  expect_open_error(write_raw(dir, "dtype.safetensors", R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8),
                    "unknown dtype");
  expect_open_error(write_raw(dir, "size.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
                    "needs 12 bytes");
  expect_open_error(write_raw(dir, "trunc.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
                    "outside");
  expect_open_error(write_raw(dir, "overlap.safetensors",
                              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              12),
                    "overlaps");
  expect_open_error(write_raw(dir, "neg.safetensors", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                    "shape");
  expect_open_error(write_raw(dir, "offs.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}})", 4),
                    "data_offsets");
}

// Resident file-backed pages of the process (/proc/self/statm, third field), in bytes.
size_t resident_file_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t size = 0, resident = 0, shared = 0;
  statm >> size >> resident >> shared;
  return shared * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

double sum_of(const Tensor& t) {
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += t.f32()[i];
  return s;
}

// A converted tensor's stored pages leave the process; its contents stay readable from the file.
TEST(Safetensors, ReleasedTensorsLeaveMemoryAndReadBackUnchanged) {
  const std::string dir = test::temp_dir("st-release");
  const int64_t n = int64_t{4} << 20;  // 16 MiB of F32
  std::vector<float> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = static_cast<float>(i % 1000) * 0.5f;
  write_safetensors(dir + "/model.safetensors", {{"big", Tensor::from_vector(values, {n})}});
  const Checkpoint c = Checkpoint::open(dir);
  const Tensor big = c.get("big");
  const double expected = sum_of(big);  // touches every page
  const size_t before = resident_file_bytes();
  c.release(big);
  const size_t after = resident_file_bytes();
  EXPECT_GE(before - std::min(before, after), size_t{15} << 20) << "resident file pages " << before << " -> " << after;
  EXPECT_EQ(sum_of(big), expected);
  // Tensors that do not view the checkpoint's files are left alone.
  const Tensor copy = big.clone();
  c.release(copy);
  EXPECT_EQ(sum_of(copy), expected);
  c.release(Tensor());
}

TEST(Safetensors, ShardedCheckpoint) {
  const std::string dir = test::temp_dir("st-shard");
  write_safetensors(dir + "/model-00001-of-00002.safetensors", {{"x", Tensor::from_vector({1}, {1})}});
  write_safetensors(dir + "/model-00002-of-00002.safetensors", {{"y", Tensor::from_vector({2, 3}, {2})}});
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"metadata":{},"weight_map":{"x":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors"}})";
  Checkpoint c = Checkpoint::open(dir);
  EXPECT_EQ(c.names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(c.get("y").to_vector(), (std::vector<float>{2, 3}));

  fs::remove(dir + "/model-00002-of-00002.safetensors");
  try {
    Checkpoint::open(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing shard"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Checkpoint::open(test::temp_dir("st-none")), Error);
}

TEST(Safetensors, ReadsTheFixtureCheckpoint) {
  SA2VA_REQUIRE_FIXTURE(dir, "sa2va-tiny");
  Checkpoint c = Checkpoint::open(dir);
  EXPECT_GT(c.names().size(), 100u);
  EXPECT_EQ(c.info("vision_model.embeddings.class_embedding").dtype, DType::BF16);
}

}  // namespace
}  // namespace sa2va
