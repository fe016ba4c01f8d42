class Timer:
    def record(self, category, extra_time=0, disable_log=False):
        pass


startup_timer = Timer()
