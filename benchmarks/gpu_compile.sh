#!/usr/bin/env bash
# GPU figures of the compiled paths (benchmarks/README.md, sections 2 and 3), in one call of about ten minutes:
#   1. sampling overhead on the CIFAR-10 NCSN++ at batch 1 and 128, eager and with sdeflow.Compiled in
#      "reduce-overhead" mode (torch.compile + CUDA graphs), the baseline replaying through the same network;
#   2. training throughput in bf16, eager and with torch.compile (Trainer(compile=True) against a compiled bare loop).
# Needs only torch, torchdiffeq, numpy, scipy and tqdm. Usage: bash benchmarks/gpu_compile.sh [OUT_DIR]
set -uo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
timeout 330 python3 benchmarks/sampler_overhead.py --device cuda --networks cifar --batches 1 128 --nfe 10 --rounds 3 \
    --solvers ddim dpmpp_2m euler_maruyama edm_stochastic --compile none reduce-overhead --out "$out" --name overhead_cuda_compile \
    2>&1 | tee "$out/overhead_cuda_compile.log"
timeout 240 python3 benchmarks/train_throughput.py --device cuda --model cifar --batch 128 --precision bf16 --compile \
    --rounds 3 --steps 12 --warmup 6 --out "$out/train_throughput_cuda_compile.json" 2>&1 | tee "$out/train_throughput_cuda_compile.log"
