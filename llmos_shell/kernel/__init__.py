"""The kernel: the loop that runs a process's requests on the CPU.

``loop`` (:class:`Kernel`: plan, fill in arguments, dispatch, reply), ``router``
and ``embed`` (which syscalls a request needs, from each driver's examples),
``grounding`` (are a call's values in the request?), ``grammar`` (the call
grammar and its parser), ``memory`` (the context window, eviction to swap) and
``process`` (a running process and its turn's record).
"""

from llmos_shell.kernel.loop import Events, Kernel, TurnResult

__all__ = ["Events", "Kernel", "TurnResult"]
