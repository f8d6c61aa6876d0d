// Python bindings of the CUDA voxelizer (kernels and host code in voxelize_kernels.cu).
#include <torch/extension.h>

#include <optional>
#include <tuple>
#include <vector>

namespace gausstr_voxelize {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t> forward(
    const at::Tensor& means, const at::Tensor& covariances, const at::Tensor& opacities,
    const at::Tensor& features, const std::optional<at::Tensor>& valid,
    const std::vector<double>& lower, double voxel, const std::vector<int64_t>& shape, double eps);

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_capturable(
    const at::Tensor& means, const at::Tensor& covariances, const at::Tensor& opacities,
    const at::Tensor& features, const std::optional<at::Tensor>& valid,
    const std::vector<double>& lower, double voxel, const std::vector<int64_t>& shape, double eps);

std::tuple<at::Tensor, at::Tensor> backward(
    const at::Tensor& params, const at::Tensor& boxes, const at::Tensor& features,
    const at::Tensor& density, const at::Tensor& voxel_features, const at::Tensor& grad_density,
    const at::Tensor& grad_features, const std::vector<double>& lower, double voxel,
    const std::vector<int64_t>& shape, double eps);

}  // namespace gausstr_voxelize

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &gausstr_voxelize::forward,
        "Splat Gaussians (B, N) into a voxel grid: density, features, params, boxes, first bad index",
        py::arg("means"), py::arg("covariances"), py::arg("opacities"), py::arg("features"),
        py::arg("valid"), py::arg("lower"), py::arg("voxel"), py::arg("shape"), py::arg("eps"));
  m.def("forward_capturable", &gausstr_voxelize::forward_capturable,
        "Splat without host synchronisation (CUDA graphs): density, features, first bad index (device)",
        py::arg("means"), py::arg("covariances"), py::arg("opacities"), py::arg("features"),
        py::arg("valid"), py::arg("lower"), py::arg("voxel"), py::arg("shape"), py::arg("eps"));
  m.def("backward", &gausstr_voxelize::backward,
        "Gradients of the splatting w.r.t. the per-Gaussian params (M, 10) and features (B, N, C)",
        py::arg("params"), py::arg("boxes"), py::arg("features"), py::arg("density"),
        py::arg("voxel_features"), py::arg("grad_density"), py::arg("grad_features"), py::arg("lower"),
        py::arg("voxel"), py::arg("shape"), py::arg("eps"));
}
