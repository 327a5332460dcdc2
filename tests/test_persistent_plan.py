"""The planner of the persistent recurrence, on the CPU, through rnnkit::persistent_plan.

Device property sets are those of an H100 SXM and an A100; every plan that fits is
checked for co-residency (all blocks resident at once), the one property whose
violation would deadlock the kernel rather than merely slow it.
"""

import itertools

import pytest
import torch

from helpers import H100, KIB, partial_index
from helpers import PERSISTENT_GATES as GATES
from helpers import persistent_plan as plan
from rnnkit import _extension

pytestmark = pytest.mark.skipif(not _extension.loaded(),
                                reason=f"rnnkit._C not loaded: {_extension.LOAD_ERROR}")

A100 = dict(sm_count=108, smem_per_block_optin=163 * KIB, smem_per_sm=164 * KIB,
            regs_per_sm=65536, max_threads_per_block=1024, max_threads_per_sm=2048)
RESERVED_SMEM_PER_BLOCK = 1024


def assert_sound(cell, batch, hidden, device, g, regs=128):
    """The plan covers the problem and all its blocks fit on the device at once."""
    units, blocks, threads = g["units_per_block"], g["blocks"], g["threads"]
    assert blocks * units >= hidden > (blocks - 1) * units
    assert g["rows_padded"] >= GATES[cell] * units and g["rows_padded"] % 16 == 0
    assert g["batch_padded"] >= batch and g["batch_padded"] % 8 == 0
    assert threads % 32 == 0 and threads <= 512
    assert threads >= units * batch, "one gate-math thread per (unit, batch) pair"
    assert g["smem_bytes"] <= device["smem_per_block_optin"]
    per_sm = g["blocks_per_sm"]
    assert per_sm * device["sm_count"] >= blocks * g["directions"]
    assert per_sm * (g["smem_bytes"] + RESERVED_SMEM_PER_BLOCK) <= device["smem_per_sm"]
    assert per_sm * threads <= device["max_threads_per_sm"]
    warp_regs = -(-(-(-regs // 8) * 8 * 32) // 256) * 256
    assert per_sm * (threads // 32) * warp_regs <= device["regs_per_sm"]


@pytest.mark.parametrize("device", [H100, A100], ids=["H100", "A100"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_target_lstm_fits_one_block_per_sm(device, dtype):
    # The small-batch inference target: LSTM B=16 H=768.
    fits, reason, g = plan("lstm", 16, 768, dtype, device)
    assert fits, reason
    assert_sound("lstm", 16, 768, device, g)
    assert g["blocks_per_sm"] == 1
    assert g["rows_padded"] == 32 and g["n_tiles"] == 2
    # W_hh (4.7 MB in bf16) spread over the blocks, no padding waste beyond 16 rows.
    assert g["blocks"] <= device["sm_count"]


def test_float32_lstm_768_fits_h100_but_not_a100():
    fits, reason, g = plan("lstm", 16, 768, torch.float32, H100)
    assert fits, reason
    assert_sound("lstm", 16, 768, H100, g)
    fits, reason, _ = plan("lstm", 16, 768, torch.float32, A100)
    assert not fits
    assert "shared memory" in reason


@pytest.mark.parametrize("device,hidden", [(H100, 1024), (A100, 768)], ids=["H100", "A100"])
def test_gru_fits(device, hidden):
    fits, reason, g = plan("gru", 32, hidden, torch.bfloat16, device)
    assert fits, reason
    assert_sound("gru", 32, hidden, device, g)


def test_gru_1024_batch_32_exceeds_a100_shared_memory():
    # W_hh rows (32 x 1024), staged h (32 x 1024) and partial sums: > 163 KiB.
    fits, reason, _ = plan("gru", 32, 1024, torch.bfloat16, A100)
    assert not fits and "shared memory" in reason


@pytest.mark.parametrize("device", [H100, A100], ids=["H100", "A100"])
def test_hidden_too_large_falls_back(device):
    fits, reason, g = plan("lstm", 16, 4096, torch.bfloat16, device)
    assert not fits and g == {}
    assert "shared memory" in reason or "co-resident" in reason


def test_batch_too_large_falls_back():
    fits, reason, _ = plan("lstm", 65, 512, torch.bfloat16, H100)
    assert not fits and "batch too large" in reason
    fits, reason, g = plan("lstm", 64, 512, torch.bfloat16, H100)
    assert fits, reason
    assert_sound("lstm", 64, 512, H100, g)


@pytest.mark.parametrize("hidden", [8, 16, 32])
def test_tiny_hidden(hidden):
    fits, reason, g = plan("lstm", 4, hidden, torch.bfloat16, H100)
    assert fits, reason
    assert_sound("lstm", 4, hidden, H100, g)
    # 4 LSTM units fill one 16-row tile: no fewer, no wasted rows.
    assert g["units_per_block"] == 4 and g["rows_padded"] == 16
    assert g["blocks"] == hidden // 4


def test_width_must_be_whole_16_byte_rows():
    fits, reason, _ = plan("lstm", 4, 12, torch.bfloat16, H100)
    assert not fits and "multiple of 8" in reason
    fits, reason, _ = plan("lstm", 4, 12, torch.float32, H100)
    assert fits, reason


def test_refusals():
    assert "projection" in plan("lstm", 8, 512, torch.bfloat16, H100, width=256)[1]
    assert "float64" in plan("lstm", 8, 512, torch.float64, H100)[1]
    assert "cooperative" in plan("lstm", 8, 512, torch.bfloat16, H100, cooperative=False)[1]
    assert "only LSTM and GRU" in plan("rnn_tanh", 8, 512, torch.bfloat16, H100)[1]
    assert "directions" in plan("lstm", 8, 512, torch.bfloat16, H100, directions=3)[1]
    with pytest.raises(RuntimeError, match="unknown cell"):
        plan("transformer", 8, 512, torch.bfloat16, H100)


def test_register_hungry_kernel_needs_fewer_blocks_per_sm():
    # With 255 registers per thread a 512-thread block alone would overflow the SM.
    for regs in (64, 128, 255):
        fits, reason, g = plan("lstm", 64, 1024, torch.bfloat16, H100, regs=regs)
        if fits:
            assert_sound("lstm", 64, 1024, H100, g, regs=regs)


def test_few_sms_force_several_blocks_per_sm_or_fallback():
    small = dict(H100, sm_count=8)
    fits, reason, g = plan("lstm", 16, 256, torch.bfloat16, small)
    assert fits, reason
    assert_sound("lstm", 16, 256, small, g)
    fits, reason, _ = plan("lstm", 16, 2048, torch.bfloat16, small)
    assert not fits


@pytest.mark.parametrize("device", [H100, A100], ids=["H100", "A100"])
def test_both_directions_share_the_sms(device):
    # Twice the blocks: the target size needs two blocks per SM, which still fit.
    fits, reason, g = plan("lstm", 16, 768, torch.bfloat16, device, directions=2)
    assert fits, reason
    assert g["directions"] == 2
    assert_sound("lstm", 16, 768, device, g)
    one = plan("lstm", 16, 768, torch.bfloat16, device)[2]
    assert g["blocks_per_sm"] >= one["blocks_per_sm"]


def test_both_directions_take_bigger_blocks_or_fail():
    # LSTM fp32 H=768: one direction 96 blocks of 8 units; two directions fit as
    # 2 x 64 blocks of 12 units, one per SM.
    fits, reason, g = plan("lstm", 16, 768, torch.float32, H100, directions=2)
    assert fits, reason
    assert g["blocks"] * 2 <= 132 and g["units_per_block"] == 12
    # LSTM fp32 H=1024: 128 blocks of 8 units fill the SMs for one direction; two
    # would need twice the shared memory per SM.
    fits, reason, _ = plan("lstm", 16, 1024, torch.float32, H100)
    assert fits, reason
    fits, reason, _ = plan("lstm", 16, 1024, torch.float32, H100, directions=2)
    assert not fits and ("co-resident" in reason or "shared memory" in reason)


@pytest.mark.parametrize("device", [H100, A100], ids=["H100", "A100"])
def test_never_plans_a_grid_that_cannot_be_resident(device):
    checked = 0
    for cell, batch, hidden, dtype, regs, directions in itertools.product(
            ["lstm", "gru"], [1, 7, 16, 33, 64], [8, 64, 200, 512, 768, 1024, 1536, 2048],
            [torch.float32, torch.float16, torch.bfloat16], [96, 128, 168], [1, 2]):
        fits, reason, g = plan(cell, batch, hidden, dtype, device, regs=regs,
                               directions=directions)
        if fits:
            assert_sound(cell, batch, hidden, device, g, regs=regs)
            checked += 1
        else:
            assert reason
    assert checked > 200


def test_opcheck():
    # persistent_plan returns no tensors (a str and a Dict, which
    # test_aot_dispatch_dynamic cannot compare), so the other checks only.
    args = ("lstm", 16, 768, 768, torch.bfloat16, *H100.values())
    torch.library.opcheck(torch.ops.rnnkit.persistent_plan.default, args,
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


# The unswizzled index of the partial sums that partial_index replaced.
def _plain_index(n, r, stride):
    return n * stride + r


def _conflict_degree(addresses):
    """Shared-memory wavefronts of one warp-wide 4-byte access: the most distinct words that
    one of the 32 banks holds among the lanes' addresses (1: conflict-free)."""
    banks = {}
    for a in addresses:
        banks.setdefault(a % 32, set()).add(a)
    return max((len(v) for v in banks.values()), default=1)


def _store_degrees(g, index):
    """The product's fragment stores (persistent_forward.cu, step 3): lane 4g + q of a
    K-warp stores rows mt*16 + g (+ 8) of columns nt*8 + 2q (+ 1), one instruction each."""
    S = g["partial_stride"]
    for mt in range(g["m_tiles"]):
        for nt in range(g["n_tiles"]):
            for dn, dr in ((0, 0), (1, 0), (0, 8), (1, 8)):
                yield _conflict_degree(
                    index(nt * 8 + 2 * (lane & 3) + dn, mt * 16 + (lane >> 2) + dr, S)
                    for lane in range(32))


def _load_degrees(g, batch, gates):
    """The gate math's loads (step 4): thread t reads row gate*U + t % U of column t // U,
    for the threads that own a (unit, batch) pair; per warp, per gate."""
    S, U = g["partial_stride"], g["units_per_block"]
    for warp in range(g["threads"] // 32):
        lanes = [t for t in range(warp * 32, warp * 32 + 32) if t // U < batch]
        for gate in range(gates):
            yield (_conflict_degree(partial_index(t // U, gate * U + t % U, S) for t in lanes),
                   _conflict_degree(_plain_index(t // U, gate * U + t % U, S) for t in lanes))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_partial_sums_are_stored_without_bank_conflicts(cell, dtype):
    """Over the plans for an H100, the fragment stores of the partial sums hit 32 distinct
    banks (without the swizzle, 2-way conflicts), and a step's stores and loads of them
    (each K-warp stores its slice once, each pair loads every slice once) take fewer
    shared-memory wavefronts than without the swizzle, whose loads it can make worse
    where U is not a multiple of 8."""
    seen = 0
    for batch in (1, 2, 5, 8, 16, 24, 40, 64):
        for hidden in (64, 136, 256, 512, 768, 1024):
            fits, _, g = plan(cell, batch, hidden, dtype, H100)
            if not fits:
                continue
            seen += 1
            assert max(_store_degrees(g, partial_index)) == 1, (batch, hidden, g)
            plain_stores = sum(_store_degrees(g, _plain_index))
            assert plain_stores > sum(_store_degrees(g, partial_index))
            loads = list(_load_degrees(g, batch, GATES[cell]))
            swizzled = sum(_store_degrees(g, partial_index)) + sum(s for s, _ in loads)
            assert swizzled < plain_stores + sum(p for _, p in loads), (batch, hidden, g)
    assert seen >= 20
