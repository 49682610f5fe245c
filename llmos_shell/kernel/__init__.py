"""The kernel: the loop that runs a process's requests on the CPU.

``loop`` (:class:`Kernel`: plan, fill in arguments, dispatch, reply), ``router``
and ``embed`` (which syscalls a request needs, from each driver's examples),
``grounding`` (are a call's values in the request?), ``grammar`` (the call
grammar and its parser), ``memory`` (the context window, eviction to swap),
``process`` (a running process and its turn's record) and ``snapshots``.

Nothing is imported here: a part that needs only ``memory`` (the MCP bridge, on
every start of ``System``) must not pay for the loop, whose grammar imports llama_cpp.
"""
