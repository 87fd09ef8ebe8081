"""Reading runs, without torch: the row schema and statuses (``schema``), the journal of a run
in progress (``journal``), results files as DataFrames (``results``), statistics (``stats``),
the load across a run and the visits of each pair (``load``, ``visits``), the picks
(``picks``), comparisons between runs (``compare``) and how numbers are written
(``formats``)."""
