# Minimal test runner for the MicroPython unix port (pytest is CPython-only).
# Usage: micropython run.py MODULE [MODULE...]   (cwd = repository root,
# MICROPYPATH = firmware/lib:tests/mp). Runs every test_* function of each
# module, prints one line per test and a closing "N passed, N failed" line.
import sys
import gc


def main(names):
    passed = failed = 0
    for name in names:
        mod = __import__(name)
        for attr in sorted(dir(mod)):
            if not attr.startswith("test_"):
                continue
            fn = getattr(mod, attr)
            gc.collect()
            try:
                fn()
            except Exception as e:
                failed += 1
                print("FAIL %s.%s: %s %r" % (name, attr, type(e).__name__, e))
                sys.print_exception(e)
            else:
                passed += 1
                print("PASS %s.%s" % (name, attr))
    print("%d passed, %d failed" % (passed, failed))
    return failed


sys.exit(1 if main(sys.argv[1:]) else 0)
