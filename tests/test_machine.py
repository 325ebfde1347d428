"""The machine description printed beside every time (model.machine), from known lscpu texts."""
from model import machine

# lscpu of a 2-core AMD EPYC virtual machine with AVX2 and no AVX-512 (shortened).
EPYC = """Architecture:                       x86_64
CPU(s):                             2
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
Model name:               Intel(R) Xeon(R) Processor
CPU family:               6
Model:                    143
Stepping:                 8
CPU max MHz:              2800.0000
Flags:                    sse4_1 avx avx2 fma avx512f avx512bw avx512vl amx_bf16 amx_tile
"""


def test_an_avx2_cpu_is_described_with_the_fields_lscpu_gives():
    d = machine.describe(machine.lscpu_fields(EPYC), environ={})
    assert d == {"cpu_model": "AMD EPYC 7B13", "cores": 2, "family_model": "25/1/0",
                 "mhz": None, "l3": "32 MiB (1 instance)", "hypervisor": "KVM",
                 "isa": "AVX2", "onednn_max_cpu_isa": None}
    assert machine.describe_line(d) == ("AMD EPYC 7B13 (family/model/stepping 25/1/0, L3 32 "
                                        "MiB (1 instance), KVM), 2 cores, AVX2; "
                                        "ONEDNN_MAX_CPU_ISA unset")


def test_the_onednn_switch_is_named_beside_what_the_cpu_has():
    d = machine.describe(machine.lscpu_fields(XEON),
                         environ={"ONEDNN_MAX_CPU_ISA": "AVX2"})
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


def test_without_lscpu_the_line_still_names_a_cpu_and_its_cores():
    d = machine.describe({}, environ={})
    assert d["cpu_model"] and d["isa"] == "unknown" and d["family_model"] is None
    assert machine.describe_line(d).endswith(", unknown; ONEDNN_MAX_CPU_ISA unset")
