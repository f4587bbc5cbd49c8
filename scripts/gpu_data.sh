# Sourced on a lent GPU host right after .gpu/base/setup.sh, in every call: keeps the CIFAR-10 part this call
# carried in /tmp/parts and joins the three once all have come, checked against .gpu/base/cifar10.sha256.
# Why: carrying .gpu/partN replaces the ignored .gpu/ folder on the host, so the parts carried by earlier
# calls are gone from the repository there (seen on the H200 lease of 2026-11-26); /tmp outlives a call
# while the machine stays warm. Carry [".gpu/base", ".gpu/part1"], then [".gpu/base", ".gpu/part2"], then
# [".gpu/base", ".gpu/part3"], each command beginning
#     source .gpu/base/setup.sh; source scripts/gpu_data.sh && ...
# Afterwards GPU_DATA_READY=1 once /tmp/jal-data/cifar10.npz (JAL_DATA_DIR) is whole: begin the commands that
# need the data with [ "$GPU_DATA_READY" = 1 ] &&.
parts=${GPU_PARTS_DIR:-/tmp/parts} data=${JAL_DATA_DIR:-/tmp/jal-data}
mkdir -p "$parts" "$data"
for part in .gpu/part*/cifar10.npz.*; do
  [ -e "$part" ] && cp "$part" "$parts/"
done
if [ ! -f "$data/cifar10.npz" ] && [ -f "$parts/cifar10.npz.0" ] && [ -f "$parts/cifar10.npz.1" ] \
    && [ -f "$parts/cifar10.npz.2" ]; then
  cat "$parts"/cifar10.npz.0 "$parts"/cifar10.npz.1 "$parts"/cifar10.npz.2 > "$data/cifar10.npz.tmp"
  if [ "$(sha256sum "$data/cifar10.npz.tmp" | cut -d' ' -f1)" = "$(cat .gpu/base/cifar10.sha256)" ]; then
    mv "$data/cifar10.npz.tmp" "$data/cifar10.npz"
  else
    rm -f "$data/cifar10.npz.tmp"; echo "cifar10.npz: the parts in $parts do not match its sha256: carry them again" >&2
  fi
fi
GPU_DATA_READY=$([ -f "$data/cifar10.npz" ] && echo 1 || echo 0)
export GPU_DATA_READY
echo "cifar10 parts kept: $(cd "$parts" && ls cifar10.npz.* 2>/dev/null | tr '\n' ' ')data ready: $GPU_DATA_READY"
