// Runs an AOTInductor package of a model that holds rnnkit modules, from C++ alone.
//
// rnnkit's operators live in its shared library (rnnkit/_C*.so): loading it registers
// them, and the package calls them. Nothing of Python is needed (the library's one
// Python entry point, used when Python imports it, is never called, hence RTLD_LAZY).
//
//   g++ -std=c++20 -O1 run_aoti_package.cpp -o run_aoti_package \
//       $(python -c "import torch.utils.cpp_extension as c; \
//         print(' '.join('-I' + p for p in c.include_paths()))") \
//       -L<torch>/lib -ltorch -ltorch_cpu -lc10 -ldl
//   LD_LIBRARY_PATH=<torch>/lib ./run_aoti_package <rnnkit>/_C*.so model.pt2 4 20 16
//
// The input is [batch, steps, features] holding sin(0), sin(1), ...; every output is
// printed as one line of numbers.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s RNNKIT_LIBRARY PACKAGE BATCH STEPS FEATURES\n", argv[0]);
    return 2;
  }
  if (dlopen(argv[1], RTLD_LAZY | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "%s\n", dlerror());
    return 1;
  }
  const int64_t batch = std::atol(argv[3]), steps = std::atol(argv[4]),
                features = std::atol(argv[5]);
  const at::Tensor x =
      at::arange(batch * steps * features, at::kFloat).sin().reshape({batch, steps, features});
  torch::inductor::AOTIModelPackageLoader loader(argv[2]);
  for (const at::Tensor& output : loader.run({x})) {
    const at::Tensor values = output.to(at::kFloat).contiguous();
    const float* data = values.data_ptr<float>();
    std::printf("output");
    for (int64_t i = 0; i < values.numel(); ++i) std::printf(" %.9g", data[i]);
    std::printf("\n");
  }
  return 0;
}
