// sa2va dump: runs one request and writes every intermediate tensor, under the names of the
// conformance fixtures' README, to a safetensors file — for comparing a stage with a reference.
#include <cstdio>

#include "cli/command.h"
#include "cli/request_options.h"
#include "core/error.h"
#include "core/stages.h"
#include "io/safetensors.h"
#include "models/sa2va_model.h"

namespace sa2va::cli {
namespace {

SA2VA_COMMAND("dump", "Run one request and write every stage tensor to a safetensors file", [](CLI::App& app) {
  auto opts = std::make_shared<RequestOptions>();
  auto out = std::make_shared<std::string>();
  opts->add_to(app, true, "f32");
  app.add_option("--out", *out, "Output .safetensors file")->required();
  return [=]() -> int {
    // write_safetensors writes beside and renames at the end: a failed run leaves an earlier dump as it
    // was. The file is probed before the model work.
    check_output_file(*out);
    Request request;
    request.text = opts->prompt;
    std::unique_ptr<Video> video;
    opts->fill(request, video);
    auto model = Sa2vaModel::load(opts->model_dir, opts->model_options());
    StageRecorder recorder;
    const Prediction p = model->predict(request, &recorder);
    write_safetensors(*out, recorder.stages(), {{"prediction", p.text}, {"precision", opts->precision}});
    std::printf("%s\n", p.text.c_str());
    std::fprintf(stderr, "wrote %zu tensors to %s\n", recorder.stages().size(), out->c_str());
    return 0;
  };
});

}  // namespace
}  // namespace sa2va::cli
