"""The bundled device drivers, each an ordinary llmos plugin."""
