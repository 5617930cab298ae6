"""kubepy's scheduler: the framework (``framework``) and its plugins (``plugins``)."""
