#include "models/quantize.h"

#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "io/config.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/llm.h"
#include "models/make_model.h"
#include "ops/weight_matrix.h"

namespace sa2va {
namespace fs = std::filesystem;

namespace {

// One tensor of the output, in writing order, and where its bytes come from.
struct Output {
  enum Kind { Copy, Values, Scales };  // Scales always follow their matrix's Values
  SafetensorsWriter::Entry entry;
  std::string source;  // the input tensor
  Kind kind = Copy;
};

}  // namespace

QuantizeReport quantize_model(const QuantizeOptions& options) {
  check(is_quantized(options.format), std::string("quantize: the format must be q8_0 or q4_0, not ") +
                                          weight_format_name(options.format));
  check(!options.model_dir.empty() && !options.out_dir.empty(), "quantize: --model and --out are required");
  const fs::path in(options.model_dir);
  check(fs::is_directory(in), options.model_dir + ": not a model folder");

  const ModelConfig config = load_config(options.model_dir);
  const Checkpoint checkpoint = Checkpoint::open(options.model_dir);
  std::map<std::string, Shape> llm_matrices;
  for (const DeclaredTensor& t : declare_checkpoint(config))
    if (t.use == MatrixUse::LanguageModel) llm_matrices[t.name] = t.shape;

  // A head stored beside tied embeddings (Sa2VA's releases keep lm_head) is quantized too; one that
  // is absent gets a quantized copy of the embedding below, as the loader would make.
  const std::string head = LanguageModel::head_name(config.llm.arch);
  const std::string embedding = LanguageModel::embedding_name(config.llm.arch);
  if (checkpoint.has(head)) llm_matrices[head] = {config.llm.vocab_size, config.llm.hidden_size};
  std::vector<Output> outputs;
  QuantizeReport report;
  auto add_quantized = [&](const std::string& name, const std::string& source, const Shape& shape) {
    const int64_t rows = shape[0], blocks = (shape[1] + kQuantBlock - 1) / kQuantBlock;
    outputs.push_back({{name, DType::U8, {rows, WeightMatrix::quantized_row_bytes(options.format, shape[1])}}, source,
                       Output::Values});
    outputs.push_back({{name + kScalesSuffix, DType::F16, {rows, blocks}}, source, Output::Scales});
    ++report.matrices_quantized;
  };
  for (const std::string& name : checkpoint.names()) {
    const TensorInfo& info = checkpoint.info(name);
    report.bytes_in += info.end - info.begin;
    check(info.dtype != DType::U8, options.model_dir + ": '" + name +
                                       "' is already quantized (quantize the original checkpoint instead)");
    const auto matrix = llm_matrices.find(name);
    if (matrix == llm_matrices.end()) {
      outputs.push_back({{name, info.dtype, info.shape}, name, Output::Copy});
      continue;
    }
    check(info.shape == matrix->second, options.model_dir + ": '" + name + "' has shape " + shape_str(info.shape) +
                                            ", expected " + shape_str(matrix->second));
    add_quantized(name, name, info.shape);
  }
  for (const auto& [name, shape] : llm_matrices)
    check(name == head || checkpoint.has(name), options.model_dir + ": missing '" + name + "' " + shape_str(shape));
  if (!checkpoint.has(head)) {
    check(checkpoint.has(embedding), options.model_dir + ": missing '" + embedding + "'");
    add_quantized(head, embedding, checkpoint.info(embedding).shape);
  }

  std::vector<SafetensorsWriter::Entry> entries;
  for (const Output& o : outputs) entries.push_back(o.entry);
  const std::map<std::string, std::string> metadata{{"format", "pt"},
                                                    {kWeightFormatKey, weight_format_name(options.format)},
                                                    {kQuantLayoutKey, kQuantLayout}};
  WeightMatrix matrix;  // the one being written (values, then scales)
  write_model_folder(options.model_dir, options.out_dir, entries, [&](size_t i) {
    const Output& o = outputs[i];
    report.bytes_out += static_cast<uint64_t>(shape_numel(o.entry.shape)) * dtype_size(o.entry.dtype);
    ++report.tensors_written;
    switch (o.kind) {
      case Output::Values:
        matrix = WeightMatrix::prepare(checkpoint.get(o.source), options.format);
        return matrix.values();
      case Output::Scales: {
        const Tensor scales = matrix.scales();
        matrix = WeightMatrix();
        return scales;
      }
      case Output::Copy: break;
    }
    return checkpoint.get(o.source);
  }, metadata);
  return report;
}

}  // namespace sa2va
