#include "ops/cuda/blas.h"

#include <cublasLt.h>
#include <dlfcn.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "core/error.h"
#include "ops/cuda/runtime.h"

namespace sa2va::cuda {
namespace {

// The functions used, opened from the library of the toolkit version this build was compiled with.
struct CublasLt {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtGetStatusString) status_string = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
};

// Not called bind: with a std::string argument, argument-dependent lookup prefers std::bind, which
// would return a discarded binder and leave every entry point null.
template <typename F>
void bind_symbol(void* lib, const char* name, F* f, const std::string& file) {
  *f = reinterpret_cast<F>(dlsym(lib, name));
  if (!*f) throw Error("cuBLASLt (" + file + ") has no " + name + ": a different CUDA version than this build's");
}

const CublasLt& library() {
  static std::once_flag once;
  static CublasLt lt;
  static std::string failure;
  std::call_once(once, [] {
    const std::string soname = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
    std::string file = soname;
    void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
#ifdef SA2VA_CUDA_LIBRARY_DIR
    if (!lib) {
      file = std::string(SA2VA_CUDA_LIBRARY_DIR) + "/" + soname;  // the toolkit this build was compiled with
      lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    }
#endif
    if (!lib) {
      failure = "cuBLASLt could not be loaded (" + soname + "): " + dlerror() +
                "; install the CUDA " + std::to_string(CUBLAS_VER_MAJOR) +
                " cuBLAS libraries or add their folder to LD_LIBRARY_PATH";
      return;
    }
    try {
      bind_symbol(lib, "cublasLtCreate", &lt.create, file);
      bind_symbol(lib, "cublasLtGetStatusString", &lt.status_string, file);
      bind_symbol(lib, "cublasLtMatmulDescCreate", &lt.desc_create, file);
      bind_symbol(lib, "cublasLtMatmulDescDestroy", &lt.desc_destroy, file);
      bind_symbol(lib, "cublasLtMatmulDescSetAttribute", &lt.desc_set, file);
      bind_symbol(lib, "cublasLtMatrixLayoutCreate", &lt.layout_create, file);
      bind_symbol(lib, "cublasLtMatrixLayoutDestroy", &lt.layout_destroy, file);
      bind_symbol(lib, "cublasLtMatmulPreferenceCreate", &lt.pref_create, file);
      bind_symbol(lib, "cublasLtMatmulPreferenceDestroy", &lt.pref_destroy, file);
      bind_symbol(lib, "cublasLtMatmulPreferenceSetAttribute", &lt.pref_set, file);
      bind_symbol(lib, "cublasLtMatmulAlgoGetHeuristic", &lt.heuristic, file);
      bind_symbol(lib, "cublasLtMatmul", &lt.matmul, file);
    } catch (const Error& e) {
      failure = e.what();
    }
  });
  if (!failure.empty()) throw Error(failure);
  return lt;
}

void check_lt(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(std::string("cuBLASLt: ") + what + ": " + library().status_string(status));
}

constexpr size_t kWorkspaceBytes = 32u << 20;

// One handle per GPU, made on first use (cuBLASLt handles may be shared by threads).
cublasLtHandle_t handle() {
  static std::mutex mutex;
  static std::map<int, cublasLtHandle_t> handles;
  int device = 0;
  check(cudaGetDevice(&device), "reading the current device");
  std::lock_guard<std::mutex> lock(mutex);
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  check_lt(library().create(&h), "creating a handle");
  handles[device] = h;
  return h;
}

// The layouts, description and chosen algorithm of one problem shape, kept for the next call.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};
// The alignment cuBLASLt may assume for a pointer: its largest power-of-two divisor, up to 256 bytes
// (an algorithm chosen for aligned operands must not run on a view that starts mid-buffer).
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 4 && address % a != 0) a /= 2;
  return a;
}

using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, int, uint32_t,
                           uint32_t, uint32_t>;

const Plan& plan_for(const PlanKey& key, cudaDataType_t type) {
  static std::mutex mutex;
  static std::map<PlanKey, Plan> plans;  // kept for the process: a model has a few dozen shapes
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  const auto& [device, M, N, K, lda, ldb, ldc, a_t, b_t, type_id, align_a, align_b, align_c] = key;
  (void)device;
  (void)type_id;
  const CublasLt& lt = library();
  Plan p;
  // Column-major view: Cᵀ [N, M] = op(B)ᵀ · op(A)ᵀ. cuBLASLt's left operand is our B, its right our A.
  check_lt(lt.desc_create(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "describing a product");
  const cublasOperation_t left_op = b_t ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t right_op = a_t ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_lt(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &left_op, sizeof(left_op)), "setting an operation");
  check_lt(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &right_op, sizeof(right_op)), "setting an operation");
  // Stored shapes, column-major: B [K, N] row-major is [N, K] col-major; B [N, K] row-major is [K, N].
  check_lt(lt.layout_create(&p.a, type, b_t ? K : N, b_t ? N : K, ldb), "describing a matrix");
  check_lt(lt.layout_create(&p.b, type, a_t ? M : K, a_t ? K : M, lda), "describing a matrix");
  check_lt(lt.layout_create(&p.c, CUDA_R_32F, N, M, ldc), "describing a matrix");
  cublasLtMatmulPreference_t pref = nullptr;
  check_lt(lt.pref_create(&pref), "making a preference");
  const size_t workspace = kWorkspaceBytes;
  check_lt(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)),
           "setting the workspace");
  // cuBLASLt's A is our B and its B our A.
  const uint32_t left = align_b, right = align_a, out = align_c;
  check_lt(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &left, sizeof(left)), "setting an alignment");
  check_lt(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &right, sizeof(right)), "setting an alignment");
  check_lt(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &out, sizeof(out)), "setting an alignment");
  check_lt(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &out, sizeof(out)), "setting an alignment");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = lt.heuristic(handle(), p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  lt.pref_destroy(pref);
  check_lt(status, "choosing an algorithm");
  if (found == 0)
    throw Error("cuBLASLt has no algorithm for a " + std::to_string(M) + "x" + std::to_string(N) + "x" +
                std::to_string(K) + " product");
  p.algo = result.algo;
  return plans.emplace(key, p).first->second;
}

}  // namespace

void check_library() {
  const CublasLt& lt = library();
  cublasLtMatrixLayout_t layout = nullptr;
  check_lt(lt.layout_create(&layout, CUDA_R_32F, 2, 3, 2), "describing a matrix");
  check_lt(lt.layout_destroy(layout), "releasing a matrix description");
}

void matmul(const void* A, int64_t lda, bool a_transposed, const void* B, int64_t ldb, bool b_transposed,
            cudaDataType_t operand_type, float* C, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
            float beta) {
  if (M <= 0 || N <= 0) return;
  int device = 0;
  check(cudaGetDevice(&device), "reading the current device");
  const PlanKey key{device, M, N, K, lda, ldb, ldc, a_transposed, b_transposed, static_cast<int>(operand_type),
                    alignment_of(A), alignment_of(B), alignment_of(C)};
  const Plan& p = plan_for(key, operand_type);
  void* workspace = scratch(kWorkspaceBytes, 3);
  check_lt(library().matmul(handle(), p.desc, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c, &p.algo, workspace,
                            kWorkspaceBytes, stream()),
           "multiplying");
}

}  // namespace sa2va::cuda
