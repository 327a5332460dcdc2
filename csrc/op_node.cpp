// OpNode (csrc/op_node.h): a hand-built backward node for the rnnkit ops.

#include "op_node.h"

#include <ATen/FuncTorchTLS.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <utility>

namespace rnnkit {
namespace {

// A new node, owned as this torch owns nodes (op_node.h, NodePtr).
template <typename N, typename... Args>
NodePtr make_owned(Args&&... args) {
  if constexpr (NodesAreIntrusive<torch::autograd::Node>::value) {
    return c10::make_intrusive<N>(std::forward<Args>(args)...);
  } else {
    return std::shared_ptr<N>(new N(std::forward<Args>(args)...),
                              [](N* p) { deleteNode(p); });  // torch::autograd's
  }
}

// The owning pointer to a node from inside it.
template <typename N>
auto self(N& node) {
  if constexpr (NodesAreIntrusive<N>::value) {
    return node.getptr();
  } else {
    return node.shared_from_this();
  }
}

}  // namespace

NodePtr OpNode::make(const char* name, Backward backward,
                                     const variable_list& args) {
  bool requires_grad = false;
  for (const at::Tensor& t : args) {
    if (!t.defined()) continue;
    TORCH_CHECK_NOT_IMPLEMENTED(!t._fw_grad(/*level=*/0).defined(), "rnnkit: ", name,
                                " does not support forward-mode AD (torch.func.jvp, jacfwd); "
                                "use reverse mode (torch.func.vjp, jacrev)");
    requires_grad = requires_grad || t.requires_grad();
  }
  if (!requires_grad || !c10::GradMode::is_enabled()) return nullptr;
  // Under torch.func's autograd transforms, rnnkit.ops runs the reference (whose ATen ops
  // compose with them); a node here could not, so it refuses with torch's own error.
  if (const auto& functorch = at::functorch::functorchTLSAccessor()) {
    functorch->checkSupportsCppAutogradFunction();
  }
  NodePtr node = make_owned<OpNode>(name, backward);
  node->set_next_edges(torch::autograd::collect_next_edges(args));
  return node;
}

void OpNode::set_outputs(const variable_list& outputs) {
  for (const at::Tensor& t : outputs) {
    torch::autograd::set_history(const_cast<at::Tensor&>(t), self<torch::autograd::Node>(*this));
  }
}

void OpNode::save(const variable_list& inputs, const variable_list& outputs) {
  for (const at::Tensor& t : inputs) saved_inputs_.emplace_back(t, /*is_output=*/false);
  for (const at::Tensor& t : outputs) saved_outputs_.emplace_back(t, /*is_output=*/true);
}

variable_list OpNode::saved() {
  variable_list result;
  result.reserve(saved_inputs_.size() + saved_outputs_.size());
  for (auto& s : saved_inputs_) result.push_back(s.unpack());
  for (auto& s : saved_outputs_) result.push_back(s.unpack(self<torch::autograd::Node>(*this)));
  return result;
}

bool OpNode::wants_any(size_t begin, size_t end) const {
  for (size_t i = begin; i < end; ++i) {
    if (wants(i)) return true;
  }
  return false;
}

void OpNode::release_variables() {
  // As generated nodes do: a second backward then fails in unpack, with torch's message.
  for (auto& s : saved_inputs_) s.reset_data();
  for (auto& s : saved_outputs_) s.reset_data();
}

variable_list OpNode::apply(variable_list&& grads) {
  variable_list result = backward_(*this, std::move(grads));
  // Only the wanted gradients go on (the backward may compute more).
  for (size_t i = 0; i < result.size(); ++i) {
    if (!wants(i)) result[i] = at::Tensor();
  }
  return result;
}

at::Tensor or_zeros(const at::Tensor& grad, const at::Tensor& like) {
  return grad.defined() ? grad : at::zeros_like(like);
}

variable_list differentiate(const variable_list& outputs, const variable_list& grads,
                            const variable_list& inputs) {
  auto wanted = [](const at::Tensor& t) { return t.defined() && t.requires_grad(); };
  variable_list wanted_inputs;
  for (const at::Tensor& t : inputs) {
    if (wanted(t)) wanted_inputs.push_back(t);
  }
  const variable_list found =
      torch::autograd::grad(outputs, wanted_inputs, grads, /*retain_graph=*/true,
                            /*create_graph=*/true, /*allow_unused=*/true);
  variable_list result;
  size_t k = 0;
  for (const at::Tensor& t : inputs) result.push_back(wanted(t) ? found[k++] : at::Tensor());
  return result;
}

}  // namespace rnnkit
