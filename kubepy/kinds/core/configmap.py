"""ConfigMap (v1)."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v

CONFIGMAP = register(Kind(
    "", "v1", "ConfigMap", "configmaps", namespaced=True, short_names=("cm",), model="V1ConfigMap", proto="ConfigMap",
    strategy=Strategy(validate=v.validate_configmap),
    printer=printers.CONFIGMAP,
))
