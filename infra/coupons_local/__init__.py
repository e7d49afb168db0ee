"""The local stack: the whole service on one machine, AWS emulated in-process by moto."""
