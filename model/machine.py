"""The machine behind a printed time: CPU model, cores, clock, last-level cache and the vector
instructions that oneDNN may use, from `lscpu` (and /proc/cpuinfo for the clock).

Virtual machines often report only "Intel(R) Xeon(R) Processor"; the family/model numbers,
clock and cache then still tell two hosts of that name apart, and the benchmarks and the
demo's summary print them beside their times. oneDNN, which runs TensorFlow's and torch's
convolutions on a CPU, picks its kernels from the CPU's flags unless ONEDNN_MAX_CPU_ISA
holds it lower (the benchmarks reproduce an AVX2-only CPU that way), so the description names
both.
"""
import os
import platform
import subprocess

# The vector instruction sets that matter for oneDNN's fp32 kernels, widest first: (name,
# the lscpu flags that must all be present).
VECTOR_ISAS = (("AVX-512", ("avx512f", "avx512bw", "avx512vl")), ("AVX2", ("avx2", "fma")),
               ("AVX", ("avx",)), ("SSE4.1", ("sse4_1",)))


def lscpu_fields(text=None):
    """{field: value} of `lscpu`'s output: of its text, or of the command run now ({} without
    it), with "CPU MHz" from /proc/cpuinfo where lscpu gives no clock (virtual machines)."""
    live = text is None
    if live:
        try:
            text = subprocess.run(["lscpu"], capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
    fields = {k.strip(): v.strip() for k, v in
              (line.split(":", 1) for line in text.splitlines() if ":" in line)}
    if live and not (fields.get("CPU max MHz") or fields.get("CPU MHz")):
        mhz = _cpuinfo_mhz()
        if mhz:
            fields["CPU MHz"] = mhz
    return fields


def vector_isa(flags):
    """The widest of VECTOR_ISAS that the space-separated CPU flags have, with ' + AMX' when
    the AMX tile instructions are there too; 'unknown' without flags."""
    have = set(flags.split())
    for name, needed in VECTOR_ISAS:
        if have.issuperset(needed):
            return name + (" + AMX" if "amx_tile" in have else "")
    return "unknown"


def _cpuinfo_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("cpu MHz")), None)
    except OSError:
        return None


def describe(fields=None, environ=None):
    """A dict of what lscpu (its lscpu_fields, by default this machine's) and the environment
    say about the CPU, None where they say nothing: cpu_model, cores, family_model
    (family/model/stepping), mhz, l3, hypervisor, isa (VECTOR_ISAS) and onednn_max_cpu_isa
    (the switch as set)."""
    f = lscpu_fields() if fields is None else fields
    environ = os.environ if environ is None else environ
    numbers = [f.get(k) for k in ("CPU family", "Model", "Stepping")]
    mhz = _float(f.get("CPU max MHz") or f.get("CPU MHz"))
    return {"cpu_model": f.get("Model name") or platform.processor() or "unknown",
            "cores": _int(f.get("CPU(s)")) or os.cpu_count(),
            "family_model": "/".join(numbers) if all(numbers) else None,
            "mhz": f"{mhz:.0f}" if mhz else None,
            "l3": f.get("L3 cache"), "hypervisor": f.get("Hypervisor vendor"),
            "isa": vector_isa(f.get("Flags", "")),
            "onednn_max_cpu_isa": environ.get("ONEDNN_MAX_CPU_ISA") or None}


def describe_line(info=None):
    """One line of describe(): 'Intel(R) Xeon(R) Processor (family/model/stepping 6/167/1,
    2600 MHz, L3 480 MiB (1 instance), KVM), 2 cores, AVX-512 + AMX; ONEDNN_MAX_CPU_ISA=AVX2'."""
    d = describe() if info is None else info
    details = [f"family/model/stepping {d['family_model']}" if d["family_model"] else None,
               f"{d['mhz']} MHz" if d["mhz"] else None,
               f"L3 {d['l3']}" if d["l3"] else None, d["hypervisor"]]
    details = ", ".join(x for x in details if x)
    switch = (f"ONEDNN_MAX_CPU_ISA={d['onednn_max_cpu_isa']}" if d["onednn_max_cpu_isa"]
              else "ONEDNN_MAX_CPU_ISA unset")
    return (f"{d['cpu_model']}" + (f" ({details})" if details else "")
            + f", {d['cores']} cores, {d['isa']}; {switch}")


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None
