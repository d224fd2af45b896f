"""PyTorch peer for the few-input-channel conv layers: forward + input gradient + weight (and bias)
gradient of one 3x3 nn.Conv2d, N = 64, 1 thread, as bench/bench_conv.c's "sum" cases time dlcore.
Usage: torch_conv.py [REPEATS]. Prints one line per shape: name, median microseconds, GFLOP/s
(3 x 2 N Ho Wo Cout Cin 9 flops, as bench_conv.c counts them)."""
import statistics, sys, time, torch
torch.set_num_threads(1); torch.manual_seed(0)
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 15
# name as in bench_conv.c: set/cin-cout@hw, padding
shapes = [('n64-sum/1-32@28', 1, 32, 28, 1), ('n64-sum/3-32@32', 3, 32, 32, 1), ('cnn-sum/1-32@28', 1, 32, 28, 0)]
for name, cin, cout, hw, pad in shapes:
    conv = torch.nn.Conv2d(cin, cout, 3, padding=pad)
    x = torch.randn(64, cin, hw, hw, requires_grad=True)
    ho = hw + 2 * pad - 2
    dy = torch.randn(64, cout, ho, ho)
    def step():
        x.grad = None; conv.weight.grad = None; conv.bias.grad = None
        conv(x).backward(dy)
    for _ in range(5): step()
    ts = []
    for _ in range(reps):
        n = 10; t = time.perf_counter()
        for _ in range(n): step()
        ts.append((time.perf_counter() - t) / n)
    us = statistics.median(ts) * 1e6
    print(f'{name} {us:.1f} us {3 * 2 * 64 * ho * ho * cout * cin * 9 / us / 1e3:.2f} GFLOP/s')
