#include "keygate/clock.h"

namespace keygate {

SystemClock& SystemClock::Get() {
  static auto* const clock = new SystemClock();  // never destroyed: usable at exit
  return *clock;
}

}  // namespace keygate
