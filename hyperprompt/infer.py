"""`python -m hyperprompt.infer --gin_file=... --gin.NAME=VALUE`: see main.py."""
import sys

from hyperprompt import main

if __name__ == '__main__':
  main.console_main(['infer', *sys.argv[1:]])
