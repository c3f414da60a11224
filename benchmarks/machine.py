"""The machine line every benchmark prints: CPU, usable cores, GPUs, TensorFlow, load average."""

import os
import platform
from pathlib import Path


def machine_description() -> str:
    import tensorflow as tf

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"CPU: {cpu}; cores usable: {affinity} (os.cpu_count {os.cpu_count()}); GPU: {gpus or 'none'}\n"
            f"TensorFlow {tf.__version__}, Python {platform.python_version()}, {platform.platform()}; "
            f"load average {os.getloadavg()[0]:.2f} (other processes share the CPU when > 0)")
