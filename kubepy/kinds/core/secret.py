"""Secret (v1): ``type`` is selectable (``--field-selector type=…``)."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.selectors import secret_fields

SECRET = register(Kind(
    "", "v1", "Secret", "secrets", namespaced=True, model="V1Secret", proto="Secret",
    strategy=Strategy(default=v.default_secret, validate=v.validate_secret),
    printer=printers.SECRET, fields=secret_fields,
))
