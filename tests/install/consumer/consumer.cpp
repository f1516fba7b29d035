// Uses the installed library through its public header only.
//   consumer                       checks the library answers (errors, caption helpers)
//   consumer MODEL IMAGE PROMPT ANSWER   also segments: prints the answer and the mask's pixel count
#include <sa2va/sa2va.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (sa2va::clean_caption("<p>a cat</p> [SEG] sleeps.") != "a cat sleeps.") return 1;
  try {
    sa2va::Model::load("no-such-model-folder");
    return 1;
  } catch (const sa2va::Error& e) {
    std::printf("error as expected: %s\n", e.what());
  }
  if (argc != 5) return 0;
  try {
    auto model = sa2va::Model::load(argv[1], {sa2va::Precision::F32});
    sa2va::Request request;
    request.image = sa2va::load_image(argv[2]);
    request.text = argv[3];
    request.forced_answer = argv[4];
    const sa2va::Prediction p = model->predict(request);
    size_t inside = 0;
    for (const auto& seg : p.masks)
      for (uint8_t v : seg.at(0).data) inside += v;
    std::printf("%s\nmask pixels: %zu\n", p.text.c_str(), inside);
    return p.masks.size() == 1 && inside > 0 ? 0 : 1;
  } catch (const sa2va::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
