"""What the measuring commands (`horesnet bench`, `horesnet restack --benchmark`) read about the machine
and this process: the CPU's name and Linux's resident-memory counters."""
import platform
from typing import Optional

__all__ = ['cpu_name', 'vm_bytes', 'reset_peak']


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vm_bytes(key: str) -> Optional[int]:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in bytes; None off Linux."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current resident memory (Linux >= 4.0); False where that is not allowed."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False
