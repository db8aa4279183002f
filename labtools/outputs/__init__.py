"""The outputs layer: analysis, verdicts, claims, tables, figures and the paper. It reads only `data/`
(never hosts, the lab, datapaths, rigs or experiments), so it runs without root and without a lab."""
