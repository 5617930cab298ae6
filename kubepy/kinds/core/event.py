"""Event (v1, core): what components report about objects."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.selectors import event_fields

EVENT = register(Kind(
    "", "v1", "Event", "events", namespaced=True, short_names=("ev",), model="CoreV1Event", proto="Event",
    strategy=Strategy(validate=v.validate_event),
    printer=printers.EVENT, fields=event_fields,
))
