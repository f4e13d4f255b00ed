#!/usr/bin/env bash
# Frechet distance (trained-classifier features) against NFE for every solver, on a model trained by
# `sdeflow-train` (digits by default), with the held-out floor. One sdeflow-eval run per NFE budget,
# gathered by sdeflow-report.
#   bash benchmarks/fid_vs_nfe.sh <checkpoint.pt> [out_dir]
set -euo pipefail
ckpt=${1:?usage: fid_vs_nfe.sh checkpoint.pt [out_dir]}
out=${2:-benchmarks/results/fid_vs_nfe}
fixed="[ddim,dpm_solver_2,dpm_solver_3,dpmpp_2m,dpmpp_3m,unipc_2_bh1,unipc_2_bh2,unipc_3_bh1,unipc_3_bh2,edm_heun,ipndm,lms,ode_euler,ode_rk4,euler_maruyama,reverse_diffusion,ancestral,pc_langevin,annealed_langevin,edm_stochastic,dpmpp_2m_sde]"
for nfe in 5 10 20 50; do
  sdeflow-eval checkpoint="$ckpt" solver="$fixed" nfe=$nfe n=1000 progress=false hydra.run.dir="$out/nfe$nfe"
done
sdeflow-eval checkpoint="$ckpt" "solver=[ode_dopri5,dpm_solver_adaptive_3,gotta_go_fast]" solver.gotta_go_fast.reltol=0.05 n=1000 progress=false hydra.run.dir="$out/adaptive" \
  || echo "adaptive solvers failed; the fixed-step results stand"
sdeflow-report "$out"
