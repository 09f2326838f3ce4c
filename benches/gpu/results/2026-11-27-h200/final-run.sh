set -u; mkdir -p .gpu; for f in .gpupack/*.xz; do n=$(basename $f .xz); xz -dc $f > .gpu/$n; chmod +x .gpu/$n; done; cp .gpupack/env.sh .gpu/; source .gpu/env.sh 2>/dev/null; W=$(mktemp -d); mkdir -p $W/fp32
timeout 60 .gpu/ops_equivalence --test-threads 1 > $W/equivalence.txt 2>&1; echo "exit $?" >> $W/equivalence.txt; grep -E "FAIL|panick|result|exit" $W/equivalence.txt
.gpu/ganscope sample --device cuda --seed 0 --count 64 --out $W/same-cuda.png; .gpu/ganscope sample --device cpu --seed 0 --count 64 --out $W/same-cpu.png
python3 -c "import numpy as np; from PIL import Image; a,b=(np.asarray(Image.open('$W/same-'+d+'.png'),dtype=np.int16) for d in ('cuda','cpu')); x=np.abs(a-b); print(f'max |cuda - cpu| = {x.max()}/255, subpixels differing: {(x>0).sum()} of {x.size}')" | tee $W/same.txt
timeout 40 .gpu/ganscope bench --device cuda --json > $W/fp32/ours-1.json 2> $W/fp32/ours-1.txt
timeout 50 python3 benches/reference/torch_dcgan.py --device cuda --json > $W/fp32/torch-1.json 2> $W/fp32/torch-1.txt
python3 benches/ratios.py $W/fp32 | tee $W/fp32/ratios.txt
timeout 60 bash benches/gpu/profile.sh .gpu/ganscope > $W/kernels.txt 2>&1; head -16 $W/kernels.txt
tar czf $OUT/results.tgz -C $W .
