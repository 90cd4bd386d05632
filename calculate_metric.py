from whisperft.cli import script_main

if __name__ == "__main__":  # spawned workers (Windows, macOS) import this file again
    script_main("evaluate")
