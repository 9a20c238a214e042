// A password-protected PDF is refused by the index, but the chat's PDF preview would ask for its
// password in a loop of modal prompts. Refuse to prompt: the preview just shows it cannot load.
window.prompt = function () {
  throw new Error("password-protected PDFs are not previewed");
};
