"""Every SQL statement of the core, behind small protocols.

:mod:`bot.storage.protocols` is what the core asks for (jobs, images, quota usage, the ledger,
channels, the admin log, alerts) and :mod:`bot.storage.records` the values it gets back; the
core imports only those two. :mod:`bot.storage.sqlite` is the implementation on aiosqlite, built
once by the composition root (:mod:`bot.app`). A second database is a second package beside it.

This module imports nothing on purpose: the core imports the protocols without pulling in a
database driver.
"""
