"""Benchmarks on the devices apps ship to: remote Linux boards over SSH, Android over adb,
device profiles, and release budgets that gate CI."""
