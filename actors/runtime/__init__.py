"""The machinery under every troupe actor: system, modes, mailboxes, timers, errors.

Users import from `actors`; these modules are documented for implementors.
"""
