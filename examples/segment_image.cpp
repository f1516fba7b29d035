// Segments what a sentence describes in an image, using only the public header.
//
//   segment_image MODEL_DIR IMAGE "Please segment the girl in the yellow dress." [MAX_NEW_TOKENS]
//
// Prints the answer and, per [SEG], the mask's size and covered fraction.
#include <sa2va/sa2va.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: %s MODEL_DIR IMAGE PROMPT [MAX_NEW_TOKENS]\n", argv[0]);
    return 2;
  }
  try {
    auto model = sa2va::Model::load(argv[1]);
    sa2va::Request request;
    request.image = sa2va::load_image(argv[2]);
    request.text = std::string("<image>") + argv[3];
    if (argc == 5) request.generation.max_new_tokens = std::atoi(argv[4]);
    const sa2va::Prediction p = model->predict(request);
    std::printf("%s\n", p.text.c_str());
    for (size_t k = 0; k < p.masks.size(); ++k) {
      const sa2va::Mask& m = p.masks[k][0];
      size_t inside = 0;
      for (uint8_t v : m.data) inside += v;
      std::printf("mask %zu: %dx%d, %.1f%% of the image%s%s\n", k, m.width, m.height,
                  100.0 * static_cast<double>(inside) / static_cast<double>(m.data.size()),
                  p.phrases[k].empty() ? "" : ", phrase: ", p.phrases[k].c_str());
    }
  } catch (const sa2va::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
