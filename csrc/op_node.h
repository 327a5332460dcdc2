#pragma once
// The backward node of one call of an rnnkit op, built by hand as PyTorch's generated
// autograd kernels build theirs: its edges follow the op's arguments one for one, absent
// ones included, and a backward run under vmap (is_grads_batched, vectorized jacobians)
// goes through it like any ATen op's. Under torch.func's grad transforms rnnkit.ops runs
// the reference instead (the double backward here could not follow a transform's levels);
// make() refuses them with torch's own error for a direct call of an op.
//
// An op's Autograd kernel (csrc/cell_autograd.cpp, csrc/layer_autograd.cpp) does:
//   auto node = OpNode::make("LSTMCellBackward", &backward, {input, hx, ...});
//   if (!node) -> no backward can follow: run the op that keeps nothing, below autograd;
//   else       -> run the op that also returns what the backward reads, below autograd,
//                 node->set_outputs({h, c}) and node->save({...inputs}, {...outputs}).
// The node has one edge per tensor argument, in the order given to make (absent optional
// arguments included, as undefined tensors); its backward returns one gradient per edge.

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace rnnkit {

using torch::autograd::variable_list;

// Nodes are owned by std::shared_ptr in older torch releases and by c10::intrusive_ptr
// (with Node::getptr) in newer ones; NodePtr is whichever this torch uses.
template <typename N, typename = void>
struct NodesAreIntrusive : std::false_type {};
template <typename N>
struct NodesAreIntrusive<N, std::void_t<decltype(std::declval<N&>().getptr())>>
    : std::true_type {};

class OpNode;
using NodePtr = std::conditional_t<NodesAreIntrusive<torch::autograd::Node>::value,
                                   c10::intrusive_ptr<OpNode>, std::shared_ptr<OpNode>>;

class OpNode : public torch::autograd::Node {
 public:
  using Backward = variable_list (*)(OpNode& node, variable_list grads);

  // The node of a call on `args`, or nullptr when no backward can follow (grad mode off,
  // or nothing requires grad). Forward-mode AD is refused here, with a clear error,
  // rather than silently dropping the tangents.
  static NodePtr make(const char* name, Backward backward,
                                      const variable_list& args);

  // Makes this node the grad_fn of the op's differentiable outputs, in order.
  void set_outputs(const variable_list& outputs);
  // What the backward reads: tensors from the arguments (undefined ones allowed), then
  // outputs (after set_outputs). Read back in that order by saved().
  void save(const variable_list& inputs, const variable_list& outputs);
  variable_list saved();

  // Whether the gradient of tensor argument `index` (make's order) is wanted; any of
  // [begin, end).
  bool wants(size_t index) const { return task_should_compute_output(index); }
  bool wants_any(size_t begin, size_t end) const;

  // The op's flags (reverse, relu), for the backward.
  std::vector<bool> flags;

  std::string name() const override { return name_; }
  void release_variables() override;

  OpNode(const char* name, Backward backward) : name_(name), backward_(backward) {}

 private:
  variable_list apply(variable_list&& grads) override;

  std::string name_;
  Backward backward_;
  std::vector<torch::autograd::SavedVariable> saved_inputs_;
  std::vector<torch::autograd::SavedVariable> saved_outputs_;
};

// ---- What the Autograd kernels share.

// An op's typed dispatcher handle, found once (call sites keep it in a static).
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Absent optional arguments travel as undefined tensors through nodes and back.
inline std::optional<at::Tensor> optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}
inline at::Tensor or_undefined(const std::optional<at::Tensor>& t) {
  return t.value_or(at::Tensor());
}

// Zeros for the gradient of an output that did not reach the loss.
at::Tensor or_zeros(const at::Tensor& grad, const at::Tensor& like);

// The gradients of `inputs` (undefined where absent or not requiring grad) through
// `outputs`, keeping the graph: a double backward differentiates an op's ATen reference.
variable_list differentiate(const variable_list& outputs, const variable_list& grads,
                            const variable_list& inputs);

}  // namespace rnnkit
