from whisperft.cli import script_main
script_main("prepare")
