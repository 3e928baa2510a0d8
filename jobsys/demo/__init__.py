"""The bundled demo application (clearly a demo): the seed's jobs over synthetic accounts."""
