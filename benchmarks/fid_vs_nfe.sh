#!/usr/bin/env bash
# Frechet distance against NFE for every solver, with the held-out floor: one sdeflow-eval run per NFE
# budget, gathered by sdeflow-report. By default on a model trained by `sdeflow-train` (digits, trained-
# classifier features); further arguments go to every sdeflow-eval call, e.g. a published checkpoint's FID:
#   bash benchmarks/fid_vs_nfe.sh <checkpoint.pt> [out_dir]
#   bash benchmarks/fid_vs_nfe.sh ddpm-cifar10-32 out/ddpm checkpoint_format=diffusers data=cifar10 data.dataset.root=cifar \
#        eval=inception eval.weights=pt_inception.pth reference=fid_stats_cifar10_train.npz n=50000 device=cuda
#   bash benchmarks/fid_vs_nfe.sh checkpoint_8.pth out/vp_deep checkpoint_format=score_sde_vp_ddpmpp_deep_continuous data=cifar10 ...
set -euo pipefail
ckpt=${1:?usage: fid_vs_nfe.sh checkpoint [out_dir] [sdeflow-eval overrides ...]}
out=${2:-benchmarks/results/fid_vs_nfe}
shift $(( $# < 2 ? $# : 2 ))
n=(n=1000)   # unless the overrides set n themselves
for arg in "$@"; do if [[ $arg == n=* ]]; then n=(); fi; done
fixed="[ddim,dpm_solver_2,dpm_solver_3,dpmpp_2m,dpmpp_3m,unipc_2_bh1,unipc_2_bh2,unipc_3_bh1,unipc_3_bh2,edm_heun,ipndm,lms,ode_euler,ode_rk4,euler_maruyama,reverse_diffusion,ancestral,pc_langevin,annealed_langevin,edm_stochastic,dpmpp_2m_sde]"
for nfe in 5 10 20 50; do
  sdeflow-eval checkpoint="$ckpt" solver="$fixed" nfe=$nfe "${n[@]}" progress=false hydra.run.dir="$out/nfe$nfe" "$@"
done
sdeflow-eval checkpoint="$ckpt" "solver=[ode_dopri5,dpm_solver_adaptive_3,gotta_go_fast]" solver.gotta_go_fast.reltol=0.05 "${n[@]}" progress=false hydra.run.dir="$out/adaptive" "$@" \
  || echo "adaptive solvers failed; the fixed-step results stand"
sdeflow-report "$out"
