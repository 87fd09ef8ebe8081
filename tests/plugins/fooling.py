"""The functions of ``tests.fooling`` as registered problems (``--plugin tests.plugins.fooling``)."""

import cases
from tests import fooling

cases.register(*fooling.problems())
