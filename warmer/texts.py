"""Everyday Portuguese small talk for warming conversations (varied; never repeated to a peer in a day)."""

OPENERS = [
    "Oi, tudo bem?", "Bom dia! Como você está?", "Boa tarde, tudo certo por aí?", "Olá! Quanto tempo!",
    "E aí, como foi o fim de semana?", "Oi! Conseguiu ver aquilo que te falei?", "Tudo tranquilo por aí?",
    "Opa, tudo joia?", "Oi, sumido(a)! Como estão as coisas?", "Bom dia, dormiu bem?",
    "Oi! Vai dar certo aquele café essa semana?", "Olá, como está o trabalho?", "Oi, está calor aí também?",
    "E aí, novidades?", "Oi! Viu o jogo ontem?", "Boa tarde! Correria hoje?", "Oi, lembrei de você agora.",
    "Olá! Tudo em paz?", "Oi, você tem um minutinho?", "Bom dia! Que dia bonito hoje.",
    "Oi! Já almoçou?", "E aí, como está a família?", "Oi, tudo bem com você?", "Boa noite quase! Cansado(a)?",
    "Oi! Passando para dar um alô.", "Olá, como vão as coisas por aí?", "Oi! Choveu muito aí?",
    "Bom dia! Semana puxada?", "Oi, deu tudo certo ontem?", "E aí, bora marcar alguma coisa?",
]

REPLIES = [
    "Tudo ótimo, e você?", "Oi! Tudo certo sim, obrigado(a).", "Bom dia! Por aqui tudo bem.",
    "Que bom falar com você!", "Correria, mas tudo em ordem.", "Sim, vi sim! Depois te conto.",
    "Tudo tranquilo, graças a Deus.", "Opa, tudo joia! E por aí?", "Está calor demais aqui!",
    "Vamos marcar sim!", "Ainda não almocei, e você?", "Família bem, obrigado(a) por perguntar.",
    "Choveu bastante, sim.", "Semana cheia, mas vai dar certo.", "Deu tudo certo, obrigado(a)!",
    "Claro, pode falar.", "Haha, verdade!", "Tudo em paz por aqui.", "Que legal, fico feliz!",
    "Nossa, nem me fale.", "Bom saber! Obrigado(a).", "Combinado então.", "Tudo bem sim, e contigo?",
    "Estou bem, só um pouco cansado(a).", "Vi sim, foi ótimo!", "Depois te mando uma foto.",
    "Sim! Vamos nos falando.", "Verdade, o tempo passa rápido.", "Aqui está tudo certo.", "Beleza!",
]
