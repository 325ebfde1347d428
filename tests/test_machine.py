"""The machine description printed beside every time (model.machine), from known lscpu texts."""
import os
import time

from model import machine

# lscpu of an AMD EPYC virtual machine with AVX2 and no AVX-512 whose 2 CPUs are the two
# hardware threads of one core (shortened).
EPYC = """Architecture:                       x86_64
CPU(s):                             2
Thread(s) per core:                 2
Core(s) per socket:                 1
Socket(s):                          1
Vendor ID:                          AuthenticAMD
Model name:                         AMD EPYC 7B13
CPU family:                         25
Model:                              1
Stepping:                           0
BogoMIPS:                           4900.00
Hypervisor vendor:                  KVM
L3 cache:                           32 MiB (1 instance)
Flags:                              fpu sse4_1 sse4_2 avx fma avx2 bmi2 sha_ni
"""
# An Intel one with AVX-512 and AMX, whose lscpu gives a clock.
XEON = """CPU(s):                   2
Thread(s) per core:       1
Core(s) per socket:       2
Socket(s):                1
Model name:               Intel(R) Xeon(R) Processor
CPU family:               6
Model:                    143
Stepping:                 8
CPU max MHz:              2800.0000
Flags:                    sse4_1 avx avx2 fma avx512f avx512bw avx512vl amx_bf16 amx_tile
"""


def test_an_avx2_cpu_is_described_with_the_fields_lscpu_gives():
    d = machine.describe(machine.lscpu_fields(EPYC), environ={}, usable=2)
    assert d == {"cpu_model": "AMD EPYC 7B13", "cpus": 2, "cores": 1, "threads_per_core": 2,
                 "usable": 2, "family_model": "25/1/0", "mhz": None,
                 "l3": "32 MiB (1 instance)", "hypervisor": "KVM", "isa": "AVX2",
                 "onednn_max_cpu_isa": None}
    assert machine.describe_line(d) == ("AMD EPYC 7B13 (family/model/stepping 25/1/0, L3 32 "
                                        "MiB (1 instance), KVM), 2 CPUs = 1 core x 2 "
                                        "threads, AVX2; ONEDNN_MAX_CPU_ISA unset")


def test_the_onednn_switch_is_named_beside_what_the_cpu_has():
    d = machine.describe(machine.lscpu_fields(XEON),
                         environ={"ONEDNN_MAX_CPU_ISA": "AVX2"}, usable=2)
    assert (d["isa"], d["mhz"], d["family_model"], d["l3"]) == ("AVX-512 + AMX", "2800",
                                                                  "6/143/8", None)
    assert machine.describe_line(d) == ("Intel(R) Xeon(R) Processor (family/model/stepping "
                                        "6/143/8, 2800 MHz), 2 cores, AVX-512 + AMX; "
                                        "ONEDNN_MAX_CPU_ISA=AVX2")


def test_vector_isa_needs_every_flag_of_a_level():
    assert machine.vector_isa("avx512f avx2 fma avx") == "AVX2"     # AVX-512 without BW/VL
    assert machine.vector_isa("avx2 avx") == "AVX"                  # AVX2 without FMA
    assert machine.vector_isa("sse4_1") == "SSE4.1"
    assert machine.vector_isa("") == "unknown"


def test_without_lscpu_the_line_still_names_a_cpu_and_its_cpus():
    d = machine.describe({}, environ={}, usable=1)
    assert d["cpu_model"] and d["isa"] == "unknown" and d["family_model"] is None
    assert d["cores"] is None and d["threads_per_core"] is None
    assert machine.describe_line(d).endswith(", unknown; ONEDNN_MAX_CPU_ISA unset")
    assert f", {d['cpus']} CPUs" in machine.describe_line(d)


def test_a_process_held_to_fewer_cpus_says_so():
    d = machine.describe(machine.lscpu_fields(XEON), environ={}, usable=1)
    assert ", 2 cores, 1 of them usable, AVX-512 + AMX;" in machine.describe_line(d)
    assert machine.describe()["usable"] == len(os.sched_getaffinity(0))


def test_steal_is_the_share_of_the_busy_cpu_time_between_two_readings(tmp_path):
    stat = tmp_path / "stat"
    #                 user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 20 870 5 0 1 4 30 0\ncpu0 50 0 10 435 2 0 1 2 15 0\n")
    before = machine.cpu_times(stat)
    assert before == (4, 125)           # idle, iowait and guest (inside user) are not added
    stat.write_text("cpu  250 0 70 1600 5 0 1 54 30 0\n")
    after = machine.cpu_times(stat)
    assert after == (54, 375)
    assert machine.steal_percent(before, after) == 20.0     # 50 of 250 busy ticks
    assert machine.steal_percent(after, after) is None      # no work between them
    assert machine.steal_percent(None, after) is None
    assert machine.steal_text(machine.steal_percent(before, after)) == "20.0 %"
    assert machine.steal_text(None) == "n/a"
    assert machine.cpu_times(tmp_path / "missing") is None
    stat.write_text("cpu  1 2 3\n")
    assert machine.cpu_times(stat) is None


def test_this_machines_busy_ticks_count_the_work_done_between_two_readings():
    before = machine.cpu_times()
    assert before is not None
    start = time.process_time()
    while time.process_time() - start < 0.3:        # 0.3 s of this process's CPU time
        sum(i * i for i in range(10_000))
    after = machine.cpu_times()
    # /proc/stat counts in USER_HZ = 100 ticks per second on every Linux architecture; the
    # other processes of the machine can only add to them.
    assert after[1] - before[1] >= 0.3 * 100 * 0.8
    assert 0.0 <= machine.steal_percent(before, after) <= 100.0
