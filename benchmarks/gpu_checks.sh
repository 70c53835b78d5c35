#!/bin/bash
# The GPU checks of the real-size work, as one script for a machine with a CUDA device and
# fa-audit installed with a CUDA build of torch (a few minutes on one H200):
#   CUDA = CPU per-layer numbers for every built-in adapter and method (devices_agree.py),
#   and the ResNet-18 figures on CUDA at 10,000 samples (bench_audit.py).
#     bash benchmarks/gpu_checks.sh [OUTPUT_FOLDER]   (default benchmarks/results)
set -u
cd "$(dirname "$0")"
out=${1:-results}
mkdir -p "$out"
python devices_agree.py --a cpu --b cuda | tee "$out/devices-agree-cuda.txt"
echo "devices_agree exit ${PIPESTATUS[0]}"
for arch in resnet18_imagenet resnet18_cifar; do
  for method in dfa fa; do
    python bench_audit.py --device cuda --arch "$arch" --method "$method" --samples 10000 --small 2048 \
      --repeats 3 > "$out/cuda-$arch-$method.json"
    echo "$arch $method exit $?"
  done
done
