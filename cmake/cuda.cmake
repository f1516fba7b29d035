# The CUDA backend (src/ops/cuda/), built in by SA2VA_CUDA:
#   AUTO  when a CUDA compiler (nvcc) is found;  ON  required (configuring fails without one);  OFF  never.
# Kernels are compiled for SA2VA_CUDA_ARCHITECTURES (default: sm_80 and sm_90). sm_80 code runs on every
# 8.x GPU (A100; RTX 30xx and A10 at 8.6; L4 and RTX 40xx at 8.9: the kernels use nothing newer than
# 8.0's bf16 tensor cores), so separate 86/89 builds would only double the compile time; H100/H200 get
# their own sm_90 code. The CUDA runtime is linked statically, so a CUDA build still starts on a
# machine without a GPU or driver; cuBLASLt is opened at run time, on first use of a GPU, so that
# CPU-only runs neither pay its load time nor its memory.
set(SA2VA_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO (when nvcc is found), ON or OFF")
set_property(CACHE SA2VA_CUDA PROPERTY STRINGS AUTO ON OFF)
set(SA2VA_CUDA_ARCHITECTURES "80;90" CACHE STRING "GPU architectures the CUDA kernels are compiled for")

set(SA2VA_WITH_CUDA OFF)
if(SA2VA_CUDA STREQUAL "ON" OR SA2VA_CUDA STREQUAL "AUTO")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(SA2VA_WITH_CUDA ON)
  elseif(SA2VA_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SA2VA_CUDA=ON but no CUDA compiler was found (put nvcc on PATH or set CUDACXX)")
  else()
    message(STATUS "sa2va: no CUDA compiler found, building without the CUDA backend")
  endif()
elseif(NOT SA2VA_CUDA STREQUAL "OFF")
  message(FATAL_ERROR "SA2VA_CUDA must be AUTO, ON or OFF (got '${SA2VA_CUDA}')")
endif()

if(SA2VA_WITH_CUDA)
  set(CMAKE_CUDA_ARCHITECTURES ${SA2VA_CUDA_ARCHITECTURES})
  enable_language(CUDA)
  # nvcc 12+ compiles C++20, which CMake 3.25 does not know yet.
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  find_package(CUDAToolkit REQUIRED)
  message(STATUS "sa2va: CUDA backend on (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  file(GLOB SA2VA_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/ops/cuda/*.cu
       ${CMAKE_SOURCE_DIR}/src/ops/cuda/*.cpp)
  target_sources(sa2va PRIVATE ${SA2VA_CUDA_SOURCES})
  set_target_properties(sa2va PROPERTIES CUDA_ARCHITECTURES "${SA2VA_CUDA_ARCHITECTURES}" CUDA_STANDARD 20)
  set_source_files_properties(${SA2VA_CUDA_SOURCES} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
  target_compile_definitions(sa2va PUBLIC $<BUILD_INTERFACE:SA2VA_WITH_CUDA=1>)
  target_compile_options(sa2va PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr --extended-lambda -Xcompiler=-Wall,-Wextra>)
  # Headers of the toolkit (cublasLt.h for the types of the functions opened at run time); the static
  # runtime needs dl and rt on the link line, which the imported target brings.
  target_include_directories(sa2va PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  # Where cuBLASLt is looked for when the loader's search path does not have it.
  set_property(SOURCE ${CMAKE_SOURCE_DIR}/src/ops/cuda/blas.cpp APPEND PROPERTY COMPILE_DEFINITIONS
               SA2VA_CUDA_LIBRARY_DIR="${CUDAToolkit_LIBRARY_DIR}")
  target_link_libraries(sa2va PRIVATE CUDA::cudart_static ${CMAKE_DL_LIBS})
endif()
