"""How the admin writes dates and times in English: ISO order, 24 hours, minutes
(``2026-12-07 14:05``), as the release, experiment and canary pages always have. Django's own
``N j, Y, P`` (``Dec. 7, 2026, 2:05 p.m.``) takes twice the width and wraps in every changelist's
date column. Input formats are not touched: Django's own ``en`` formats still parse what people
type.
"""

DATETIME_FORMAT = "Y-m-d H:i"
DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
SHORT_DATE_FORMAT = "Y-m-d"
