#pragma once
// A scope in which the ATen ops a kernel calls run in the dtypes they are given, whatever
// autocast says: the modules cast as torch.nn does before calling an op, and a kernel's own
// matmuls must not be cast again (rnnkit/ops.py's _no_autocast does the same in Python).

#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace rnnkit {

struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

}  // namespace rnnkit
