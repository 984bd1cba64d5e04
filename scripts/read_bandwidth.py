import torch, time
x = torch.empty(2*1024**3, dtype=torch.bfloat16, device='cuda').uniform_()  # 4 GiB
y = torch.empty_like(x)
def t(f, n=10):
    f(); torch.cuda.synchronize()
    s=torch.cuda.Event(enable_timing=True); e=torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(n): f()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e)/n/1e3
b = x.numel()*2
print("sum read  %.0f GB/s" % (b/t(lambda: x.sum())/1e9))
print("amax read %.0f GB/s" % (b/t(lambda: x.amax())/1e9))
print("copy rw   %.0f GB/s" % (2*b/t(lambda: y.copy_(x))/1e9))
v = x.view(torch.int64)
print("int64 sum read %.0f GB/s" % (b/t(lambda: v.sum())/1e9))
