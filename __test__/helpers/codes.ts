/** What calling `f` came to: 'ok', or the error's code (its text when it has none). */
export async function code(f: () => unknown): Promise<string> {
  try {
    await f()
    return 'ok'
  } catch (e) {
    return (e as { code?: string }).code ?? String(e)
  }
}
