/** A minimal typed event emitter that never throws for an unhandled `error` (unlike Node's). */

/** Listener signatures by event name. */
export type EventMap = Record<string, (...args: never[]) => void>;

/** `on`/`off`/`emit` over an {@link EventMap}. */
export class Emitter<E extends EventMap> {
  private listeners = new Map<keyof E, Set<E[keyof E]>>();

  /** Calls `listener` on every `event`; returns a function that removes it. */
  on<K extends keyof E>(event: K, listener: E[K]): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Removes `listener` from `event`. */
  off<K extends keyof E>(event: K, listener: E[K]): void {
    this.listeners.get(event)?.delete(listener);
  }

  /** Whether `event` has listeners. */
  protected has<K extends keyof E>(event: K): boolean {
    return (this.listeners.get(event)?.size ?? 0) > 0;
  }

  /** Calls the listeners of `event`; a listener that throws is reported on the console, not to the caller. */
  protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as (...a: Parameters<E[K]>) => void)(...args);
      } catch (err) {
        console.error(`tickwire: a '${String(event)}' listener threw`, err);
      }
    }
  }
}
