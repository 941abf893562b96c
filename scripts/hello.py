"""An example script: pitstop run scripts/hello.py --wait -- world"""

import sys
import time

name = sys.argv[1] if len(sys.argv) > 1 else "pitstop"
for step in range(1, 4):
    print(f"hello {name}: step {step}/3", flush=True)
    time.sleep(0.3)
print("done", flush=True)
