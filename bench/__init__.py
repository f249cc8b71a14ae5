"""`make bench` (`python -m bench`): the measurements of docs/performance.md, one module per
scenario in bench/scenarios/, on real servers started with harness/."""
