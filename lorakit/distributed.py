"""Beyond one GPU: QLoRA sharded with PyTorch's own FSDP2 on N processes (notebook 10).

FSDP (Zhao et al. 2023, arXiv 2304.11277; ZeRO-3 in Rajbhandari et al. 2020, arXiv 1910.02054)
keeps 1/N of every parameter, gradient and optimizer state on each of N ranks, all-gathers a
layer's parameters just before that layer computes and reduce-scatters its gradients right
after. ``torch.distributed.fsdp.fully_shard`` (FSDP2) does this per parameter, as a DTensor
sharded on dim 0. The pieces, each derived in notebook 10:

- **Quant storage** (``quant_storage_as_parameters``): lorakit's ``Linear4bit`` keeps its packed
  4-bit codes and block constants as *buffers*, and FSDP shards only *parameters*. We re-register
  them as frozen ``nn.Parameter`` s (``requires_grad=False``), uint8 as they are, so FSDP2 shards
  them with everything else. (FSDP1 flattened a unit into one tensor of one dtype, which is why
  Answer.AI's FSDP-QLoRA stores the codes in a float dtype, ``bnb_4bit_quant_storage``.) Scalars
  (the double-quantization ``offset``) stay whole, replicated.
- **The training** (``train_qlora``): the course GPT, ``prepare_qlora`` (NF4 + double
  quantization, LoRA on all linear layers), AdamW on A and B. With ``world_size`` N > 1 each
  rank takes its 1/N slice of the same global batch; FSDP2 averages the gradients, so the run
  is the single-process run, step for step. ``python -m lorakit.distributed`` is the script a
  launcher starts on every rank (``torchrun --nproc_per_node N -m lorakit.distributed``).
- **Measuring** (``rank_bytes``, ``CommCounter``, ``comm_per_step``): bytes each rank holds,
  and bytes all-gathered and reduce-scattered per step, counted and predicted.
- **Launching** (``launch``): ``torchrun`` on ``127.0.0.1`` with a free port, in its own process
  group, with a timeout; a rank that dies or a run that overruns stops every rank and raises
  ``DistributedRunError`` with what happened. gloo on CPUs, NCCL on GPUs: the same script. The
  plumbing (the store, the processes, signals, teardown) lives in ``lorakit.launcher``.
- **At scale** (``fsdp_qlora_memory``): per-GPU memory of FSDP-QLoRA for LLaMA shapes, with and
  without CPU offload, built on ``lorakit.memory.estimate_memory``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch
import torch.nn as nn

from .adapters import save_adapter
from .data import get_batch, load_splits
from .launcher import DistributedRunError, exit_now, run_ranks, say_finished  # noqa: F401 (the error is part of launch's API)
from .memory import (
    GB,
    PAPER_DTYPES,
    estimate_memory,
    parameter_counts,
    quantized_bits_per_parameter,
    shape_of,
)
from .model import GPT
from .qlora import Linear4bit, prepare_qlora
from .train import LN2, fast_mode, load_gpt, set_seed
from .validate import integer, number, positive_int

# ---------------------------------------------------------------- quant storage


def quant_storage_as_parameters(model: nn.Module) -> dict[str, list[str]]:  # notebook 10 §2
    """Turn every ``Linear4bit``'s quantized tensors into frozen parameters, so FSDP shards them.

    FSDP2 shards each *parameter* on its dim 0 and leaves buffers whole on every rank. The packed
    codes (uint8, one byte per two weights), the 8-bit absmax codes and the second-level absmax
    are 1-D, so they shard; 0-d tensors (the double-quantization ``offset``) cannot be split and
    stay buffers. Names and ``state_dict`` keys do not change. Returns what was moved
    (``"sharded"``) and what stays whole (``"replicated"``), as module-path names.
    """
    layers = {n: m for n, m in model.named_modules() if isinstance(m, Linear4bit)}
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no Linear4bit layers: call prepare_qlora first"
        )
    sharded, replicated = [], []
    for path, layer in layers.items():
        for name in ("packed", "absmax", "absmax_codes", "absmax2", "offset"):  # the stored weight
            if name in layer._parameters:  # already a parameter (called twice)
                sharded.append(f"{path}.{name}")
                continue
            tensor = layer._buffers.get(name)
            if tensor is None:  # absent in this layout (absmax with double quantization, ...)
                continue
            if tensor.dim() == 0:
                replicated.append(f"{path}.{name}")
                continue
            del layer._buffers[name]
            layer.register_parameter(name, nn.Parameter(tensor, requires_grad=False))
            sharded.append(f"{path}.{name}")
    return {"sharded": sharded, "replicated": replicated}


def shard(model: GPT, mesh) -> GPT:  # notebook 10 §3
    """FSDP2, layer by layer: each transformer block is one unit, the rest (embeddings, final
    norm, head) the root unit. Bottom-up, as ``fully_shard`` requires. In place."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


# ---------------------------------------------------------------- measuring


def _local(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this rank holds: a DTensor's local shard, or ``t`` itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a view is counted once, padding included)."""
    seen, total = set(), 0
    for t in tensors:
        t = _local(t)
        storage = t.untyped_storage()
        key = (t.device.type, storage.data_ptr(), storage.nbytes())
        if storage.nbytes() and key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def rank_bytes(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, int]:  # notebook 10 §5
    """Bytes this process holds, by kind: what FSDP shards, and what every rank keeps whole.

    - ``parameters``: every parameter (frozen 4-bit codes and constants, frozen embeddings and
      norms, trainable A and B); with FSDP the local shard, padding included.
    - ``gradients``: the gradients of A and B (sharded too).
    - ``optimizer``: AdamW's ``exp_avg`` and ``exp_avg_sq`` (sharded).
    - ``replicated``: buffers (double-quantization offsets) and AdamW's scalar
      ``step`` counters: whole on every rank.
    Counted by storage, so this is what is allocated, not ``numel × element size`` of a view.
    """
    params = list(model.parameters())
    state = [
        v
        for s in (optimizer.state.values() if optimizer else [])
        for v in s.values()
        if isinstance(v, torch.Tensor)
    ]
    return dict(
        parameters=_storage_bytes(params),
        gradients=_storage_bytes(p.grad for p in params if p.grad is not None),
        optimizer=_storage_bytes(v for v in state if v.dim() > 0),
        replicated=_storage_bytes(list(model.buffers()) + [v for v in state if v.dim() == 0]),
    )


def shard_shapes(module: nn.Module) -> dict[str, dict]:  # notebook 10 §5
    """For each parameter of ``module``: its global shape, this rank's local shape, its placement."""
    out = {}
    for name, p in module.named_parameters():
        placement = str(tuple(p.placements)) if hasattr(p, "placements") else "whole"
        out[name] = dict(
            shape=list(p.shape),
            local=list(_local(p).shape),
            placement=placement,
            dtype=str(p.dtype).replace("torch.", ""),
        )
    return out


def comm_per_step(model: nn.Module) -> dict[str, int]:  # notebook 10 §6
    """Bytes FSDP2 moves in one training step, predicted from the sharded model.

    Each unit all-gathers its parameters (padded shards × N, every dtype as bytes) before its
    forward; a non-root unit is freed after forward and all-gathered again before its backward
    (``reshard_after_forward``), the root is kept. After backward each unit reduce-scatters the
    gradients of its trainable parameters (float32 here). These are the collectives' full buffer
    sizes; in a ring each rank sends and receives (N-1)/N of them.
    """
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not units:
        raise ValueError("the model is not sharded: call shard(model, mesh) first")
    world = torch.distributed.get_world_size()
    owned, gathered, reduced = set(), 0, 0
    for unit in reversed(units):  # children first: a parameter belongs to the innermost unit
        params = [p for p in unit.parameters() if id(p) not in owned]
        owned.update(id(p) for p in params)
        full = world * sum(_local(p).untyped_storage().nbytes() for p in params)
        grads = world * sum(_local(p).untyped_storage().nbytes() for p in params if p.requires_grad)
        gathered += full * (1 if unit is model else 2)
        reduced += grads
    return dict(all_gather=gathered, reduce_scatter=reduced)


class CommCounter:  # notebook 10 §6
    """Count the bytes of FSDP2's all-gathers and reduce-scatters while the ``with`` block runs.

    FSDP2 calls ``torch.distributed.all_gather_single`` and ``reduce_scatter_single``; we wrap
    those two functions (and restore them on exit) and add up their buffers' bytes.
    """

    def __init__(self):
        self.bytes = {"all_gather": 0, "reduce_scatter": 0}
        self.calls = {"all_gather": 0, "reduce_scatter": 0}

    def __enter__(self) -> CommCounter:
        dist = torch.distributed
        self._saved = dist.all_gather_single, dist.reduce_scatter_single
        gather, scatter = self._saved

        def all_gather_single(output, input, *args, **kwargs):
            self.bytes["all_gather"] += output.numel() * output.element_size()
            self.calls["all_gather"] += 1
            return gather(output, input, *args, **kwargs)

        def reduce_scatter_single(output, input, *args, **kwargs):
            self.bytes["reduce_scatter"] += input.numel() * input.element_size()
            self.calls["reduce_scatter"] += 1
            return scatter(output, input, *args, **kwargs)

        dist.all_gather_single, dist.reduce_scatter_single = (
            all_gather_single,
            reduce_scatter_single,
        )
        return self

    def __exit__(self, *exc) -> None:
        torch.distributed.all_gather_single, torch.distributed.reduce_scatter_single = self._saved


# ---------------------------------------------------------------- the training run


@dataclasses.dataclass(frozen=True)  # notebook 10 §3
class RunSettings:
    """One QLoRA fine-tune on the ``docs`` corpus; the same settings give the same run on any N."""

    steps: int = 30
    global_batch: int = 16
    lr: float = 2e-3
    r: int = 16
    alpha: float = 16.0
    seed: int = 0
    grad_clip: float = 1.0
    max_bytes: int | None = None

    def __post_init__(self):
        for name in ("steps", "global_batch", "r", "seed"):
            integer(getattr(self, name), f"RunSettings.{name}", low=0 if name == "seed" else 1)
        for name in ("lr", "alpha", "grad_clip"):
            number(getattr(self, name), f"RunSettings.{name}", low=0, low_open=True)
        if self.max_bytes is not None:
            positive_int(self.max_bytes, "RunSettings.max_bytes (or None)")

    def check_world(self, world_size: int) -> None:
        """The global batch must split evenly, or the N-rank run would not be the same run."""
        positive_int(world_size, "world_size (the number of ranks)")
        if self.global_batch % world_size:
            raise ValueError(
                f"global_batch {self.global_batch} does not split into {world_size} equal "
                f"per-rank batches; choose a multiple of {world_size}"
            )

    def to_args(self) -> list[str]:
        args = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                args += [_flag(f.name), str(value)]
        return args


def _flag(field: str) -> str:
    """The command-line flag of a ``RunSettings`` field. ``--r`` would be taken by torchrun
    (argparse accepts it as an abbreviation of its own options), so r and alpha get a prefix."""
    return "--lora-" + field if field in ("r", "alpha") else "--" + field.replace("_", "-")


def run_settings() -> RunSettings:  # notebook 10 §3
    """Learner size (the cached 4-layer base, 30 steps of 16 windows), or tiny in test mode."""
    if fast_mode():
        return RunSettings(steps=6, global_batch=8, r=8, max_bytes=200_000)
    return RunSettings(steps=30, global_batch=16, r=16, max_bytes=None)


# notebook 10 §3
def build_qlora(
    base_path: str | os.PathLike, settings: RunSettings, device: torch.device | str = "cpu"
) -> GPT:
    """The course base loaded from its file, made QLoRA (NF4 + DQ, LoRA on all linear layers),
    its 4-bit tensors turned into frozen parameters. Seeded: every rank builds the same model."""
    model = load_gpt(base_path)
    set_seed(settings.seed)  # LoRA's A is random: the same seed gives every rank the same A
    prepare_qlora(
        model, "all-linear", r=settings.r, alpha=settings.alpha, quant_type="nf4", double_quant=True
    )
    quant_storage_as_parameters(model)
    return model.to(device)


def train_qlora(
    model: GPT,
    settings: RunSettings,
    rank: int = 0,
    world_size: int = 1,  # notebook 10 §4
    on_step=None,
) -> tuple[torch.optim.Optimizer, list[float]]:
    """AdamW on A and B for ``settings.steps`` steps; returns the optimizer and the loss per step
    (bits per byte, the global batch's mean on every rank).

    Every rank draws the same global batch from the same seeded generator and keeps rows
    ``rank·b : (rank+1)·b`` (``b = global_batch / world_size``). Its loss is the mean over its
    rows; FSDP2 averages the gradients over ranks, so the update is the one for the global batch.
    """
    settings.check_world(world_size)
    dist = torch.distributed
    device = next(p for p in model.parameters() if p.requires_grad).device
    train_data, _ = load_splits("docs", settings.max_bytes)
    gen = torch.Generator().manual_seed(settings.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    b = settings.global_batch // world_size
    losses = []
    model.train()
    for step in range(settings.steps):
        x, y = get_batch(train_data, settings.global_batch, model.cfg.context, gen)
        x, y = x[rank * b : (rank + 1) * b].to(device), y[rank * b : (rank + 1) * b].to(device)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        opt.step()
        mean = loss.detach().clone()
        if world_size > 1:
            dist.all_reduce(mean)  # gloo has no AVG: sum, then divide
            mean /= world_size
        losses.append(mean.item() / LN2)
        if on_step is not None:
            on_step(step, losses[-1], opt)
    return opt, losses


def _device_and_backend(local_rank: int) -> tuple[torch.device, str]:
    """NCCL on this rank's GPU when CUDA is present, else gloo on the CPU: the only difference."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), "nccl"
    return torch.device("cpu"), "gloo"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lorakit.distributed",
        description="QLoRA on the course GPT, sharded with FSDP2 over the ranks "
        "torchrun starts (gloo on CPUs, NCCL on GPUs).",
    )
    defaults = run_settings()
    for f in dataclasses.fields(RunSettings):
        kind = float if "float" in str(f.type) else int
        p.add_argument(_flag(f.name), dest=f.name, type=kind, default=getattr(defaults, f.name))
    p.add_argument(
        "--base", default=None, help="base model safetensors (default: lorakit's cached base)"
    )
    p.add_argument(
        "--out", required=True, help="folder for result.json and adapter.safetensors (rank 0)"
    )
    p.add_argument(
        "--fail-rank", type=int, default=None, help="(failure drill) this rank exits at --fail-step"
    )
    p.add_argument("--fail-step", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:  # notebook 10 §3
    """One rank of the sharded run; torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_*."""
    args = _parse(argv)
    settings = RunSettings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(RunSettings)}
    )
    dist = torch.distributed
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise SystemExit(
            f"python -m lorakit.distributed is one rank of a run: start it with torchrun "
            f"(torchrun --standalone --nproc-per-node 2 -m lorakit.distributed --out DIR) or "
            f"lorakit.distributed.launch(2, DIR); {missing} are not set"
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    settings.check_world(world)
    device, backend = _device_and_backend(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        out = Path(args.out)
        base = args.base
        if base is None:  # rank 0 trains or loads the cached base first; the others then read it
            from .train import base_model

            if rank == 0:
                base = base_model(progress=False)[1]["path"]
            dist.barrier()
            if rank != 0:
                base = base_model(progress=False)[1]["path"]
        model = build_qlora(base, settings, device)
        shard(model, init_device_mesh(device.type, (world,)))
        predicted = comm_per_step(model)
        start = time.perf_counter()

        def on_step(step, bpb, opt):
            if args.fail_rank == rank and step + 1 == args.fail_step:
                print(
                    f"[rank {rank}] failure drill: exiting with code 3 at step {step + 1}",
                    flush=True,
                )
                os._exit(3)
            if rank == 0:
                print(
                    f"step {step + 1}/{settings.steps}  loss {bpb:.4f} bits/byte  "
                    f"{time.perf_counter() - start:.1f} s",
                    flush=True,
                )

        with CommCounter() as comm:
            opt, losses = train_qlora(model, settings, rank, world, on_step)
        seconds = time.perf_counter() - start
        mine = rank_bytes(model, opt)
        everyone, shards = [None] * world, [None] * world
        dist.all_gather_object(everyone, mine)
        dist.all_gather_object(shards, shard_shapes(model.blocks[0].attn.q_proj))
        for unit in model.modules():  # gather the full A, B (and 4-bit) tensors to save them
            if hasattr(unit, "unshard") and hasattr(unit, "reshard"):
                unit.unshard()
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            save_adapter(model, out / "adapter.safetensors")
        for unit in model.modules():
            if hasattr(unit, "unshard") and hasattr(unit, "reshard"):
                unit.reshard()
        if rank == 0:
            result = dict(
                world_size=world,
                backend=backend,
                device=str(device),
                settings=dataclasses.asdict(settings),
                train_bpb=losses,
                seconds=seconds,
                rank_bytes=everyone,
                q_proj_shards=shards,
                comm_measured={k: v // settings.steps for k, v in comm.bytes.items()},
                comm_calls={k: v // settings.steps for k, v in comm.calls.items()},
                comm_predicted=predicted,
                torch=torch.__version__,
            )
            (out / "result.json").write_text(json.dumps(result, indent=1))
            print(
                f"done: {settings.steps} steps on {world} ranks ({backend}) in {seconds:.1f} s",
                flush=True,
            )
        dist.barrier()
        say_finished()  # every rank's work is done and written (lorakit.launcher: teardown)
    finally:
        dist.destroy_process_group()
    return 0


# ---------------------------------------------------------------- the single-process reference


def train_single(base_path: str | os.PathLike, settings: RunSettings) -> dict:  # notebook 10 §4
    """The same fine-tune in this process, without torch.distributed: the reference."""
    model = build_qlora(base_path, settings)
    start = time.perf_counter()
    opt, losses = train_qlora(model, settings)
    return dict(
        model=model,
        train_bpb=losses,
        seconds=time.perf_counter() - start,
        rank_bytes=rank_bytes(model, opt),
    )


# ---------------------------------------------------------------- launching


def torchrun_command(nproc: int, args: list[str]) -> list[str]:  # notebook 10 §3
    """What to type on a multi-GPU machine: ``torchrun`` starting this script on ``nproc`` ranks."""
    return [
        "torchrun",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "lorakit.distributed",
        *args,
    ]


def launch(
    nproc: int,
    out: str | os.PathLike,
    settings: RunSettings | None = None,
    *,  # notebook 10 §3
    base: str | os.PathLike | None = None,
    timeout: float = 300.0,
    echo: bool = True,
    extra_args: list[str] | None = None,
) -> dict:
    """Start ``python -m lorakit.distributed`` on ``nproc`` ranks, as torchrun would; return result.json.

    The ranks run on 127.0.0.1 only (``lorakit.launcher``: the store, the processes, the watching).
    ``echo`` prints rank 0's progress lines. If a rank exits with an error, the others are
    stopped and ``DistributedRunError`` names it; if ``timeout`` seconds pass, every rank is
    stopped and it is raised too. Nothing is left running and nothing hangs.
    """
    settings = run_settings() if settings is None else settings
    if not isinstance(settings, RunSettings):
        raise TypeError(f"settings must be a RunSettings, got {type(settings).__name__}")
    settings.check_world(nproc)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if base is not None and not Path(base).is_file():
        raise FileNotFoundError(f"base model file {base} does not exist")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").unlink(missing_ok=True)
    args = (
        settings.to_args()
        + ["--out", str(out)]
        + (["--base", str(base)] if base else [])
        + list(extra_args or [])
    )

    def progress(rank: int, line: str) -> bool:
        return echo and (
            (rank == 0 and line.startswith(("step ", "done:"))) or line.startswith("[rank ")
        )

    run_ranks("lorakit.distributed", args, nproc, timeout, progress)
    return json.loads((out / "result.json").read_text())


# ---------------------------------------------------------------- the arithmetic at scale


# Answer.AI, "Benchmarking QLoRA+FSDP" (2024, benchmarks_03_2024.md in AnswerDotAI/fsdp_qlora):
# Llama-2 70B, QLoRA, context 2048, gradient checkpointing. (GPUs, GB per GPU, CPU offload, batch
# per GPU) of the setups they trained, and the peak they measured on 2 × RTX 3090 with offload.
ANSWER_AI_70B_RUNS = [
    (2, 24, True, 2),
    (4, 24, False, 1),
    (8, 24, False, 1),
    (2, 48, False, 2),
    (4, 48, False, 3),
    (2, 40, False, 1),
    (4, 40, False, 4),
    (8, 40, False, 4),
    (4, 80, False, 8),
]
ANSWER_AI_70B_PEAK_GIB = 14.92  # 2 × 24 GB, CPU offload, batch 2: "Peak Memory (GiB)"


def fsdp_qlora_memory(
    model: str,
    n_gpus: int,
    cpu_offload: bool = False,
    r: int = 64,  # notebook 10 §7
    batch_size: int = 1,
    seq_len: int = 2048,
    gradient_checkpointing: bool = True,
) -> dict:
    """GB per GPU for FSDP-QLoRA of a LLaMA-shaped ``model`` on ``n_gpus`` (an estimate).

    Built from ``lorakit.memory.estimate_memory(model, "qlora", ...)`` (one GPU, the whole
    model): weights, LoRA, gradients and optimizer states are sharded, ÷ ``n_gpus``; each GPU
    also holds the all-gathered parameters of the unit computing now and of the next one
    (FSDP prefetches): two decoder layers, whole. The root unit (embeddings, final norm, head, in
    16 bits) is gathered before forward and kept until backward is done (FSDP2 does not reshard
    the root after forward), so it is counted whole ("root") instead of ÷ ``n_gpus``. Activations
    are per GPU (``batch_size`` is per GPU) and not sharded. With ``cpu_offload`` the sharded
    states live in CPU RAM and are copied in per layer: the GPU keeps the two gathered layers,
    the gathered root and the activations. bfloat16 adapters and compute, as Answer.AI trained.
    Allocator overhead and temporaries (a dequantized weight, the float32 logits) are ignored.
    """
    positive_int(n_gpus, "n_gpus")
    one = estimate_memory(
        model,
        "qlora",
        r=r,
        batch_size=batch_size,
        seq_len=seq_len,
        gradient_checkpointing=gradient_checkpointing,
        **PAPER_DTYPES,
    )
    counts = parameter_counts(model)
    layers = shape_of(model)["num_hidden_layers"]
    layer = (
        counts["linear"] / layers * quantized_bits_per_parameter() / 8 / GB
    )  # one decoder layer, 4-bit
    lora_layer = one["lora"] / layers
    gathered = 2 * (layer + lora_layer) if n_gpus > 1 or cpu_offload else 0.0
    root = (
        2 * counts["other"] / GB
    )  # 16-bit embeddings, norms and head: whole from forward to backward
    sharded = {k: one[k] / n_gpus for k in ("weights", "lora", "gradients", "optimizer")}
    on_gpu = {k: (0.0 if cpu_offload else v) for k, v in sharded.items()}
    if n_gpus > 1 or cpu_offload:  # the root's own shard is part of the gathered whole
        on_gpu["weights"] -= 0.0 if cpu_offload else root / n_gpus
    else:
        root = 0.0  # one GPU: the root is in "weights" already
    out = dict(on_gpu, gathered=gathered, root=root, activations=one["activations"])
    out["total"] = sum(out.values())
    out["cpu"] = (
        sum(sharded.values()) * n_gpus if cpu_offload else 0.0
    )  # the host holds every rank's shard
    return out


if __name__ == "__main__":
    exit_now(main())  # without C++ teardown, which can abort a finished rank (lorakit.launcher)
